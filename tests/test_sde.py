"""The forward SDEs against closed forms, independent ODE integration, scipy and Monte Carlo."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats

from scoresde_jax import config as config_lib
from scoresde_jax import sde as sde_lib
from scoresde_jax.utils import batch_mul

SDES = {
    "ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
    "vp": sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
}


def _closed_form(name, t):
    """Kernel N(a x0, s^2 I) written out from the paper's appendix B (independent of the library)."""
    t = np.asarray(t, np.float64)
    if name == "ve":
        s = 0.01 * (50.0 / 0.01) ** t
        return np.ones_like(t), s
    log_a = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    a = np.exp(log_a)
    if name == "vp":
        return a, np.sqrt(1 - a**2)
    return a, 1 - a**2


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_prob_closed_form(name):
    s = SDES[name]
    t = jnp.linspace(1e-3, 1.0, 11)
    x = jnp.arange(11.0)[:, None] * jnp.ones((11, 3))
    mean, std = s.marginal_prob(x, t)
    a, sd = _closed_form(name, t)
    np.testing.assert_allclose(np.asarray(mean), a[:, None] * np.asarray(x), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(std), sd, rtol=1e-5)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_prob_solves_moment_odes(name, x64):
    """For dx = c(t) x dt + g(t) dw: a' = c a and v' = 2 c v + g^2 (Sarkka & Solin eq. 5.51).

    Integrating these ODEs from the drift and diffusion of ``sde()`` must give ``marginal_prob``; this ties the
    kernel to the SDE without using the closed form. VE starts at v(0) = sigma_min^2 (its kernel is N(x0, sigma(t)^2)
    rather than a perturbation of a point mass), VP / sub-VP at v(0) = 0."""
    s = SDES[name]

    def rhs(t, y):
        tt = jnp.asarray([t])
        c = float(s.drift_coeff(tt)[0])
        g = float(s.diffusion_coeff(tt)[0])
        return [c * y[0], 2 * c * y[1] + g**2]

    v0 = 0.01**2 if name == "ve" else 0.0
    ts = np.linspace(0.0, 1.0, 6)
    sol = scipy.integrate.solve_ivp(rhs, (0.0, 1.0), [1.0, v0], t_eval=ts, rtol=1e-10, atol=1e-12)
    a = np.asarray(s.mean_coeff(jnp.asarray(ts)))
    std = np.asarray(s.marginal_std(jnp.asarray(ts)))
    np.testing.assert_allclose(sol.y[0], a, rtol=1e-6)
    np.testing.assert_allclose(sol.y[1], std**2, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("name", list(SDES))
def test_sde_drift_and_diffusion_formulas(name):
    s = SDES[name]
    t = jnp.array([0.0, 0.25, 0.5, 1.0])
    x = jnp.ones((4, 2, 2, 1)) * 3.0
    drift, diff = s.sde(x, t)
    tn = np.asarray(t, np.float64)
    if name == "ve":
        sig = 0.01 * 5000.0**tn
        np.testing.assert_allclose(np.asarray(drift), 0.0)
        np.testing.assert_allclose(np.asarray(diff), sig * np.sqrt(2 * np.log(5000.0)), rtol=1e-5)
    else:
        beta = 0.1 + tn * 19.9
        np.testing.assert_allclose(np.asarray(drift), -0.5 * beta[:, None, None, None] * 3.0 * np.ones((4, 2, 2, 1)),
                                   rtol=1e-5)
        g2 = beta if name == "vp" else beta * (1 - np.exp(-2 * 0.1 * tn - 19.9 * tn**2))
        np.testing.assert_allclose(np.asarray(diff) ** 2, g2, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", list(SDES))
def test_prior_logp_matches_scipy(name):
    s = SDES[name]
    z = jax.random.normal(jax.random.key(0), (5, 3, 4, 2)) * 2.0
    expected = scipy.stats.norm.logpdf(np.asarray(z, np.float64), scale=s.prior_std).reshape(5, -1).sum(-1)
    np.testing.assert_allclose(np.asarray(s.prior_logp(z)), expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(SDES))
def test_prior_sampling_moments(name):
    s = SDES[name]
    z = s.prior_sampling(jax.random.key(1), (20000, 4))
    assert z.shape == (20000, 4)
    np.testing.assert_allclose(float(jnp.std(z)), s.prior_std, rtol=0.02)
    assert abs(float(jnp.mean(z))) < 0.03 * s.prior_std


def test_discrete_tables():
    ve, vp = SDES["ve"], SDES["vp"]
    np.testing.assert_allclose(ve.discrete_sigmas[[0, -1]], [0.01, 50.0], rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.log(ve.discrete_sigmas)), np.log(5000) / 999, rtol=1e-10)
    i = np.arange(1000)
    np.testing.assert_allclose(vp.discrete_betas, 0.1 / 1000 + i * 19.9 / (1000 * 999), rtol=1e-12)
    np.testing.assert_allclose(vp.alphas_cumprod, np.cumprod(1 - vp.discrete_betas))
    # The DDPM chain approximates the continuous kernel: alphabar_i ~ a(t_i)^2.
    # In log space the Riemann sum of beta over the grid approximates int_0^t beta = -2 log a(t).
    t = (i + 1) / 1000
    np.testing.assert_allclose(np.log(vp.alphas_cumprod), -0.5 * t**2 * 19.9 - t * 0.1, rtol=0.01, atol=2e-3)


@pytest.mark.parametrize("name", list(SDES))
def test_discretize_approximates_sde(name):
    """f_i ~ f(x, t) dt and G_i ~ g(t) sqrt(dt) with dt = 1/N."""
    s = SDES[name]
    n = s.N
    idx = np.array([1, 10, 300, 998])
    t = jnp.asarray((idx + 0.5) / (n - 1))
    x = jnp.ones((4, 3))
    f, G = s.discretize(x, t)
    # VE / VP use the level index floor(t (N - 1)); sub-VP is Euler-Maruyama at t itself.
    t_level = t if name == "subvp" else jnp.asarray(idx / (n - 1))
    drift, g = s.sde(x, t_level)
    np.testing.assert_allclose(np.asarray(f), np.asarray(drift) / n, rtol=0.02, atol=1e-8)
    np.testing.assert_allclose(np.asarray(G), np.asarray(g) / np.sqrt(n), rtol=0.02)


def test_smld_discretization_telescopes():
    """sum_{j<=i} G_j^2 = sigma_i^2 exactly: the SMLD chain has the discrete marginals N(x0, sigma_i^2)."""
    s = sde_lib.VESDE(sigma_min=0.1, sigma_max=10.0, N=50)
    i = np.arange(50)
    _, G = s.discretize(jnp.zeros((50, 1)), jnp.asarray((i + 0.5) / 49))
    np.testing.assert_allclose(np.cumsum(np.asarray(G, np.float64) ** 2), s.discrete_sigmas**2, rtol=1e-5)


@pytest.mark.parametrize("name", list(SDES))
def test_schedule_facts(name):
    """The ancestral step's noise (VE: the SMLD posterior sigma_{i-1} G_i / sigma_i; VP / sub-VP:
    G_i of the chain) and the default time grid of the ODE solvers."""
    s = SDES[name]
    idx = np.array([0, 1, 300, 999])
    t = jnp.asarray((idx + 0.5) / (s.N - 1))
    _, G = s.discretize(jnp.ones((4,)), t)
    G = np.asarray(G, np.float64)
    if name == "ve":
        sigma = s.discrete_sigmas[idx]
        prev = np.where(idx == 0, 0.0, s.discrete_sigmas[np.maximum(idx - 1, 0)])
        expected = prev * G / sigma
    else:
        expected = G
    np.testing.assert_allclose(np.asarray(s.ancestral_std(t, jnp.float32)), expected, rtol=1e-4,
                               atol=1e-5)
    assert s.default_time_grid == ("logsnr" if name == "ve" else "quadratic")


@pytest.mark.parametrize("name", ["ve", "vp", "subvp"])
def test_monte_carlo_forward_chain_matches_marginal(name):
    """Run the discretized forward process x_{i+1} = x_i + f_i + G_i z from a fixed x_0 and compare the
    empirical mean and std at the last level with ``marginal_prob`` (up to discretization and MC error)."""
    cls = type(SDES[name])
    s = cls(N=200)
    n_mc = 4000
    x0 = jnp.full((n_mc, 1), 1.5)
    idx = jnp.arange(s.N - 1)
    ts = (idx + 0.5) / (s.N - 1)

    def step(x, inp):
        t, key = inp
        f, G = s.discretize(x, jnp.full((n_mc,), t))
        return x + f + batch_mul(G, jax.random.normal(key, x.shape)), None

    keys = jax.random.split(jax.random.key(2), s.N - 1)
    x, _ = jax.lax.scan(step, x0, (ts, keys))
    # After levels 0..N-2 the chain is at level N-1 (t = T) for the continuous-time comparison.
    mean, std = s.marginal_prob(x0[:1], jnp.ones((1,)))
    if name == "ve":
        # SMLD chain: G_0 = sigma_0 adds sigma_min^2 on top of N(x0, sigma_{N-2}^2 - ...); exact: sigma_{N-2}^2.
        std = jnp.asarray([s.discrete_sigmas[s.N - 2]])
    emp_mean, emp_std = float(jnp.mean(x)), float(jnp.std(x))
    mc = float(std[0]) / math.sqrt(n_mc)
    assert abs(emp_mean - float(mean[0, 0])) < 4 * mc + 0.02 * abs(float(mean[0, 0])) + 1e-3
    np.testing.assert_allclose(emp_std, float(std[0]), rtol=0.05)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("probability_flow", [False, True])
def test_reverse_sde_formula(name, probability_flow):
    s = SDES[name]
    x = jax.random.normal(jax.random.key(3), (4, 2, 2, 1))
    t = jnp.array([0.1, 0.3, 0.6, 0.9])

    def score_fn(y, tt):
        return -2.0 * y + batch_mul(tt, jnp.ones_like(y))

    rev = s.reverse(score_fn, probability_flow=probability_flow)
    drift, diff = rev.sde(x, t)
    f, g = s.sde(x, t)
    w = 0.5 if probability_flow else 1.0
    np.testing.assert_allclose(np.asarray(drift), np.asarray(f - batch_mul(w * g**2, score_fn(x, t))), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(diff), 0.0 if probability_flow else np.asarray(g))
    rf, rG = rev.discretize(x, t)
    fd, Gd = s.discretize(x, t)
    np.testing.assert_allclose(np.asarray(rf), np.asarray(fd - batch_mul(w * Gd**2, score_fn(x, t))), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rG), 0.0 if probability_flow else np.asarray(Gd))
    assert rev.N == s.N and rev.T == s.T


@pytest.mark.parametrize("name", list(SDES))
def test_float64_end_to_end(name, x64):
    s = SDES[name]
    x = jnp.ones((3, 2), jnp.float64)
    t = jnp.array([0.1, 0.5, 1.0], jnp.float64)
    for out in (*s.sde(x, t), *s.marginal_prob(x, t), *s.discretize(x, t), s.prior_logp(x),
                s.prior_sampling(jax.random.key(0), (2, 2))):
        assert out.dtype == jnp.float64, out.dtype
    # float64 resolves the VP std at tiny t where float32 cannot.
    std = s.marginal_std(jnp.array([1e-9], jnp.float64))
    assert float(std[0]) > 0


@pytest.mark.parametrize("name", list(SDES))
def test_float32_stays_float32(name):
    s = SDES[name]
    x = jnp.ones((3, 2), jnp.float32)
    t = jnp.array([0.1, 0.5, 1.0], jnp.float32)
    for out in (*s.sde(x, t), *s.marginal_prob(x, t), *s.discretize(x, t), s.prior_logp(x)):
        assert out.dtype == jnp.float32, out.dtype


def test_sdes_are_static_jit_arguments():
    calls = []

    @jax.jit
    def f(x):
        return x

    def g(s, x):
        calls.append(1)
        return s.marginal_prob(x, jnp.ones(x.shape[0]))[1]

    jg = jax.jit(g, static_argnums=0)
    x = jnp.ones((2, 2))
    jg(sde_lib.VPSDE(), x)
    jg(sde_lib.VPSDE(), x)  # equal and hashable: no retrace
    assert len(calls) == 1
    jg(sde_lib.subVPSDE(), x)  # another class: a new trace
    assert len(calls) == 2
    assert sde_lib.VPSDE() != sde_lib.subVPSDE()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        sde_lib.VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="num_scales"):
        sde_lib.VPSDE(N=1)
    with pytest.raises(ValueError, match="beta_min < beta_max"):
        sde_lib.subVPSDE(beta_min=5.0, beta_max=1.0)


def test_get_sde_from_config():
    import ml_collections

    cfg = ml_collections.ConfigDict({"training": {"sde": "vesde"},
                                     "model": {"sigma_min": 0.01, "sigma_max": 50.0, "beta_min": 0.1,
                                               "beta_max": 20.0, "num_scales": 1000}})
    s, eps = config_lib.get_sde(cfg)
    assert s == sde_lib.VESDE() and eps == 1e-5
    cfg.training.sde = "subvpsde"
    s, eps = config_lib.get_sde(cfg)
    assert s == sde_lib.subVPSDE() and eps == 1e-3
    cfg.training.sde = "vp"
    with pytest.raises(ValueError, match="vpsde"):
        config_lib.get_sde(cfg)


def test_vp_rejects_ddpm_chain_with_beta_at_least_one():
    with pytest.raises(ValueError, match="N > beta_max"):
        sde_lib.VPSDE(beta_max=20.0, N=20)
    sde_lib.subVPSDE(beta_max=20.0, N=20)  # Euler-Maruyama chain: fine
