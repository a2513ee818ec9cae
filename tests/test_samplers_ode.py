"""Probability-flow ODE sampler against the exact flow map of Gaussian data.

For data ``N(mu, diag(v))`` the marginals are ``N(a_t mu, (a_t^2 v + s_t^2) I)`` and the
probability-flow ODE ``dx/dt = c x - g^2 score / 2`` is linear, with solution per coordinate

    x_t - a_t mu = sqrt((a_t^2 v + s_t^2) / (a_T^2 v + s_T^2)) (x_T - a_T mu)

(``y = x - a mu`` obeys ``y' = (c + g^2 / (2 V)) y`` and ``V = a^2 v + s^2`` obeys ``V' = 2 c V +
g^2``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from scoresde_jax.analytic import exact_score_fn, gaussian
from scoresde_jax.sde import VESDE, VPSDE, subVPSDE
from scoresde_jax.samplers import ODE_SOLVERS, ode_sample, pc_sample, reverse_diffusion
from scoresde_jax.samplers import adaptive

SDES = {
    "ve": (VESDE(sigma_min=0.01, sigma_max=5.0, N=100), 1e-5),
    "vp": (VPSDE(N=100), 1e-3),
    "subvp": (subVPSDE(N=100), 1e-3),
}
MU = np.array([1.0, -0.5])
VAR = np.array([0.5, 2.0])


def exact_flow(sde, x_T, t, dtype=np.float64):
    tt = np.array([sde.T, t])
    with jax.enable_x64(True):
        a = np.asarray(sde.mean_coeff(jnp.asarray(tt, jnp.float64)))
        s = np.asarray(sde.marginal_std(jnp.asarray(tt, jnp.float64)))
    V = a[:, None] ** 2 * VAR + s[:, None] ** 2
    return (a[1] * MU + np.sqrt(V[1] / V[0]) * (np.asarray(x_T, np.float64) - a[0] * MU)).astype(
        dtype
    )


def _target(dtype):
    return gaussian(jnp.asarray(MU, dtype), jnp.asarray(VAR, dtype))


@pytest.mark.parametrize("name", list(SDES))
def test_ode_matches_exact_flow(name):
    sde, eps = SDES[name]
    score = exact_score_fn(_target(jnp.float32), sde)
    x_T = sde.prior_std * jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    result = ode_sample(
        score, sde, (64, 2), jax.random.PRNGKey(1), x_init=x_T, eps=eps, denoise=False
    )
    expected = exact_flow(sde, x_T, eps)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(np.asarray(result.x), expected, atol=2e-4 * scale)
    assert int(result.nfe) > 0
    if name != "vp":
        return
    # denoise = one noise-free reverse-diffusion step at eps from the ODE solution (+1 evaluation)
    denoised = ode_sample(
        score, sde, (64, 2), jax.random.PRNGKey(1), x_init=x_T, eps=eps, denoise=True
    )
    t_eps = jnp.full((64,), eps)
    _, mean = reverse_diffusion(score, result.x, t_eps, jnp.zeros_like(result.x), sde=sde)
    np.testing.assert_allclose(np.asarray(denoised.x), np.asarray(mean), rtol=1e-4, atol=1e-4)
    assert int(denoised.nfe) == int(result.nfe) + 1


def test_ode_nfe_counts_every_evaluation():
    """``nfe`` from the diffrax stats equals the number of score calls (counted on the host)."""
    sde, eps = SDES["vp"]
    exact = exact_score_fn(_target(jnp.float32), sde)
    calls = []

    def counting_score(x, t):
        jax.debug.callback(lambda: calls.append(1))
        return exact(x, t)

    for solver in ("tsit5", "heun"):
        calls.clear()
        result = ode_sample(
            counting_score,
            sde,
            (16, 2),
            jax.random.PRNGKey(2),
            solver=solver,
            rtol=1e-3,
            atol=1e-3,
            eps=eps,
        )
        jax.block_until_ready(result.x)
        assert int(result.nfe) == len(calls), (solver, int(result.nfe), len(calls))


def test_ode_solvers_and_errors():
    sde, eps = SDES["vp"]
    score = exact_score_fn(_target(jnp.float32), sde)
    x_T = jax.random.normal(jax.random.PRNGKey(3), (32, 2))
    expected = exact_flow(sde, x_T, eps)
    for solver in ("dopri5", "RK45"):
        result = ode_sample(
            score,
            sde,
            (32, 2),
            jax.random.PRNGKey(0),
            x_init=x_T,
            eps=eps,
            solver=solver,
            denoise=False,
        )
        np.testing.assert_allclose(np.asarray(result.x), expected, atol=5e-4)
    assert "rk23" in ODE_SOLVERS and "dop853" in ODE_SOLVERS
    with pytest.raises(ValueError, match="Unknown ODE solver"):
        ode_sample(score, sde, (32, 2), jax.random.PRNGKey(0), solver="lsoda")


def _param_score(params, x, t):
    del t
    return -(x - params["mu"]) / params["var"]


def test_ode_compiles_once():
    sde = VPSDE(N=50)
    before = adaptive._ode_sample._cache_size()
    for i in range(3):
        params = {"mu": jnp.asarray(0.1 * i), "var": jnp.asarray(1.0 + i)}
        jax.block_until_ready(
            ode_sample(Partial(_param_score, params), sde, (4, 2), jax.random.PRNGKey(i)).x
        )
    assert adaptive._ode_sample._cache_size() == before + 1


def test_x64_end_to_end():
    """float64 in -> float64 out, at a precision float32 cannot reach."""
    with jax.enable_x64(True):
        sde, eps = SDES["subvp"]
        score = exact_score_fn(_target(jnp.float64), sde)
        x_T = jax.random.normal(jax.random.PRNGKey(0), (16, 2), jnp.float64)
        result = ode_sample(
            score,
            sde,
            (16, 2),
            jax.random.PRNGKey(1),
            x_init=x_T,
            eps=eps,
            rtol=1e-10,
            atol=1e-10,
            denoise=False,
        )
        assert result.x.dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(result.x), exact_flow(sde, x_T, eps), rtol=1e-8, atol=1e-8
        )
        # pc_sample: deterministic probability-flow reverse-diffusion chain vs a float64 numpy loop
        vp = VPSDE(N=40)
        vp_score = exact_score_fn(_target(jnp.float64), vp)
        out = pc_sample(
            vp_score,
            vp,
            (16, 2),
            jax.random.PRNGKey(1),
            corrector="none",
            probability_flow=True,
            x_init=x_T,
            eps=1e-3,
        )
        assert out.x.dtype == jnp.float64
        x = np.asarray(x_T)
        for t in np.linspace(1.0, 1e-3, 40):
            i = int(t * 39)
            beta = vp.discrete_betas[i]
            at = np.exp(float(vp.log_mean_coeff(jnp.asarray(t, jnp.float64))))
            score_np = -(x - at * MU) / (at**2 * VAR + 1 - at**2)
            x = x - (np.sqrt(1 - beta) - 1) * x + 0.5 * beta * score_np
        np.testing.assert_allclose(np.asarray(out.x), x, rtol=1e-12, atol=1e-12)
        # default dtype under x64 (no x_init): float64
        assert pc_sample(vp_score, vp, (4, 2), jax.random.PRNGKey(0)).x.dtype == jnp.float64
