"""One-step predictors and correctors against their closed forms (official score_sde formulas)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.sde import VESDE, VPSDE, subVPSDE
from scoresde_jax.samplers import (
    CORRECTORS,
    PREDICTORS,
    ancestral_sampling,
    annealed_langevin,
    chain_coeffs,
    corrector_alpha,
    euler_maruyama,
    langevin,
    none_corrector,
    none_predictor,
    pc_sample,
    reverse_diffusion,
)

N = 50
VE = VESDE(sigma_min=0.01, sigma_max=5.0, N=N)
VP = VPSDE(beta_min=0.1, beta_max=20.0, N=N)
SUBVP = subVPSDE(beta_min=0.1, beta_max=20.0, N=N)
SDES = {"ve": VE, "vp": VP, "subvp": SUBVP}

B, D = 5, 3
X = jax.random.normal(jax.random.PRNGKey(0), (B, D))
Z = jax.random.normal(jax.random.PRNGKey(1), (B, D))
# times on the grid linspace(T, eps, N) the samplers use, one per example
T_VEC = jnp.asarray(np.linspace(1.0, 1e-3, N)[[0, 3, 17, 31, N - 1]], jnp.float32)
IDX = np.asarray(T_VEC * (N - 1)).astype(np.int64)  # official timestep (floor)


def score_fn(x, t):
    """A nonlinear, time-dependent stand-in for a network."""
    return jnp.tanh(x) * (1.0 + t[:, None]) - 0.3 * x**2


def _np(a):
    return np.asarray(a, np.float64)


def _rev_drift(sde, x, t, weight):
    """f(x, t) - weight g(t)^2 score(x, t) from the scalar functions of the SDE, in numpy."""
    c = _np(sde.drift_coeff(t))[:, None]
    g = _np(sde.diffusion_coeff(t))[:, None]
    return c * _np(x) - weight * g**2 * _np(score_fn(x, t))


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("probability_flow", [False, True])
def test_euler_maruyama(name, probability_flow):
    sde = SDES[name]
    dt = 1.0 / N
    weight = 0.5 if probability_flow else 1.0
    expected_mean = _np(X) - _rev_drift(sde, X, T_VEC, weight) * dt
    x0, mean0 = euler_maruyama(
        score_fn, X, T_VEC, jnp.zeros_like(X), sde=sde, probability_flow=probability_flow
    )
    np.testing.assert_allclose(_np(mean0), expected_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(x0), expected_mean, rtol=1e-5, atol=1e-5)
    x, _ = euler_maruyama(score_fn, X, T_VEC, Z, sde=sde, probability_flow=probability_flow)
    g = 0.0 if probability_flow else _np(sde.diffusion_coeff(T_VEC))[:, None]
    np.testing.assert_allclose(
        _np(x), expected_mean + g * math.sqrt(dt) * _np(Z), rtol=1e-5, atol=1e-5
    )


def test_reverse_diffusion_official_formulas():
    s = _np(score_fn(X, T_VEC))
    # VE (official: f = 0, G = sqrt(sigma_i^2 - sigma_{i-1}^2)): x_mean = x + G^2 score
    sig = VE.discrete_sigmas
    prev = np.where(IDX == 0, 0.0, sig[np.maximum(IDX - 1, 0)])
    G2 = (sig[IDX] ** 2 - prev**2)[:, None]
    x, mean = reverse_diffusion(score_fn, X, T_VEC, Z, sde=VE)
    np.testing.assert_allclose(_np(mean), _np(X) + G2 * s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(x), _np(X) + G2 * s + np.sqrt(G2) * _np(Z), rtol=1e-5, atol=1e-5)
    # VP (official: f = (sqrt(alpha_i) - 1) x, G = sqrt(beta_i))
    beta = VP.discrete_betas[IDX][:, None]
    expected = _np(X) - (np.sqrt(1 - beta) - 1) * _np(X) + beta * s
    x, mean = reverse_diffusion(score_fn, X, T_VEC, Z, sde=VP)
    np.testing.assert_allclose(_np(mean), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(x), expected + np.sqrt(beta) * _np(Z), rtol=1e-5, atol=1e-5)
    # sub-VP (Euler-Maruyama chain): f = c(t) x / N, G^2 = g(t)^2 / N; probability flow halves G^2,
    # no noise
    c = _np(SUBVP.drift_coeff(T_VEC))[:, None]
    g2 = _np(SUBVP.diffusion_coeff(T_VEC))[:, None] ** 2
    x, mean = reverse_diffusion(score_fn, X, T_VEC, Z, sde=SUBVP, probability_flow=True)
    np.testing.assert_allclose(
        _np(mean), _np(X) - c * _np(X) / N + 0.5 * g2 / N * s, rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(_np(x), _np(mean), rtol=0, atol=0)


def test_ancestral_official_formulas():
    s = _np(score_fn(X, T_VEC))
    # VE (official vesde_update_fn)
    sig = VE.discrete_sigmas[IDX][:, None]
    adj = np.where(IDX == 0, 0.0, VE.discrete_sigmas[np.maximum(IDX - 1, 0)])[:, None]
    mean_ve = _np(X) + s * (sig**2 - adj**2)
    std_ve = np.sqrt(adj**2 * (sig**2 - adj**2) / sig**2)
    x, mean = ancestral_sampling(score_fn, X, T_VEC, Z, sde=VE)
    np.testing.assert_allclose(_np(mean), mean_ve, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(x), mean_ve + std_ve * _np(Z), rtol=1e-5, atol=1e-5)
    assert std_ve[-1, 0] == 0.0  # the last level (i = 0) adds no noise
    # VP (official vpsde_update_fn)
    beta = VP.discrete_betas[IDX][:, None]
    mean_vp = (_np(X) + beta * s) / np.sqrt(1 - beta)
    x, mean = ancestral_sampling(score_fn, X, T_VEC, Z, sde=VP)
    np.testing.assert_allclose(_np(mean), mean_vp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(x), mean_vp + np.sqrt(beta) * _np(Z), rtol=1e-5, atol=1e-5)
    # sub-VP: its own chain m = 1 - beta(t) / (2N), G^2 = g(t)^2 / N (module docstring)
    m = 1.0 - _np(SUBVP.beta(T_VEC))[:, None] / (2 * N)
    G2 = _np(SUBVP.diffusion_coeff(T_VEC))[:, None] ** 2 / N
    mean_sub = (_np(X) + G2 * s) / m
    x, mean = ancestral_sampling(score_fn, X, T_VEC, Z, sde=SUBVP)
    np.testing.assert_allclose(_np(mean), mean_sub, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(x), mean_sub + np.sqrt(G2) * _np(Z), rtol=1e-5, atol=1e-5)


def test_ancestral_mean_is_exact_tweedie_for_gaussian_chain():
    """For Gaussian data the reverse kernel of one chain step is Gaussian with mean (x + G^2
    score_i) / m, where score_i is the score of the chain's marginal p_i: compare with the
    closed-form conditional mean."""
    v0, mu = 0.7, 0.4  # x_{i-1} ~ N(mu, v0); x_i = m x_{i-1} + G z
    for sde in SDES.values():
        t = jnp.full((1,), 0.37)
        m, G = (float(a[0]) for a in chain_coeffs(sde, t, jnp.float32))
        vi = m**2 * v0 + G**2

        def gauss_score(x, t, vi=vi, m=m):
            return -(x - m * mu) / vi

        xi = jnp.array([[1.3], [-0.2]])
        _, mean = ancestral_sampling(
            gauss_score, xi, jnp.full((2,), 0.37), jnp.zeros_like(xi), sde=sde
        )
        exact = mu + m * v0 / vi * (_np(xi) - m * mu)  # E[x_{i-1} | x_i]
        np.testing.assert_allclose(_np(mean), exact, rtol=1e-5, atol=1e-6)


def test_corrector_alpha():
    np.testing.assert_allclose(_np(corrector_alpha(VE, T_VEC, jnp.float32)), 1.0)
    np.testing.assert_allclose(
        _np(corrector_alpha(VP, T_VEC, jnp.float32)), VP.alphas[IDX], rtol=1e-6
    )
    expected = (1.0 - _np(SUBVP.beta(T_VEC)) / (2 * N)) ** 2
    np.testing.assert_allclose(_np(corrector_alpha(SUBVP, T_VEC, jnp.float32)), expected, rtol=1e-6)
    # sub-VP's alpha agrees with the VP (DDPM) alpha to first order in 1/N
    np.testing.assert_allclose(expected, VP.alphas[IDX], atol=2.0 / N**2 * 20**2 / 4)


@pytest.mark.parametrize("name", list(SDES))
def test_langevin_step_size(name):
    sde = SDES[name]
    snr = 0.16
    s = _np(score_fn(X, T_VEC))
    alpha = _np(corrector_alpha(sde, T_VEC, jnp.float32))[:, None]
    grad_norm = np.linalg.norm(s, axis=-1).mean()
    noise_norm = np.linalg.norm(_np(Z), axis=-1).mean()
    eps = 2 * alpha * (snr * noise_norm / grad_norm) ** 2
    x, mean = langevin(score_fn, X, T_VEC, Z, sde=sde, snr=snr)
    np.testing.assert_allclose(_np(mean), _np(X) + eps * s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _np(x), _np(X) + eps * s + np.sqrt(2 * eps) * _np(Z), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("name", list(SDES))
def test_annealed_langevin_step_size(name):
    sde = SDES[name]
    snr = 0.2
    s = _np(score_fn(X, T_VEC))
    alpha = _np(corrector_alpha(sde, T_VEC, jnp.float32))[:, None]
    std = _np(sde.marginal_std(T_VEC))[:, None]
    eps = 2 * alpha * (snr * std) ** 2
    x, mean = annealed_langevin(score_fn, X, T_VEC, Z, sde=sde, snr=snr)
    np.testing.assert_allclose(_np(mean), _np(X) + eps * s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        _np(x), _np(X) + eps * s + np.sqrt(2 * eps) * _np(Z), rtol=1e-5, atol=1e-6
    )


def test_none_is_identity_and_lookup_names():
    for fn, kw in ((none_predictor, {"probability_flow": False}), (none_corrector, {"snr": 0.1})):
        x, mean = fn(score_fn, X, T_VEC, Z, sde=VP, **kw)
        assert x is X and mean is X
    assert set(PREDICTORS) == {"euler_maruyama", "reverse_diffusion", "ancestral_sampling", "none"}
    assert CORRECTORS["ald"] is CORRECTORS["annealed_langevin"] is annealed_langevin
    assert CORRECTORS["langevin"] is langevin


def test_bad_input_errors():
    sde = VP
    with pytest.raises(ValueError, match="Unknown predictor"):
        pc_sample(score_fn, sde, (4, 2), jax.random.PRNGKey(0), predictor="heun")
    with pytest.raises(ValueError, match="Unknown corrector"):
        pc_sample(score_fn, sde, (4, 2), jax.random.PRNGKey(0), corrector="hmc")
    with pytest.raises(ValueError, match="probability-flow"):
        pc_sample(
            score_fn,
            sde,
            (4, 2),
            jax.random.PRNGKey(0),
            predictor="ancestral_sampling",
            probability_flow=True,
        )
    with pytest.raises(ValueError, match="x_init has shape"):
        pc_sample(score_fn, sde, (4, 2), jax.random.PRNGKey(0), x_init=jnp.zeros((3, 2)))
    with pytest.raises(TypeError, match="sde must be"):
        pc_sample(score_fn, "vpsde", (4, 2), jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="score_fn must be"):
        pc_sample(None, sde, (4, 2), jax.random.PRNGKey(0))
