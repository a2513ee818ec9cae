"""Fast samplers (DDIM, DPM-Solver++(2M), Heun) and the config-driven lookup.

* quality: each reproduces the ring mixture in few steps (DPM-Solver++ 20, DDIM 50, Heun 18) with
  exact scores;
* order of convergence on Gaussian data against the exact probability-flow map (float64): DDIM first
  order, DPM-Solver++(2M) and Heun second order;
* grids, nfe bookkeeping, compile-once, ``get_sampling_fn`` with official config keys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.tree_util import Partial

from scoresde_jax.analytic import exact_score_fn, gaussian
from scoresde_jax.sde import VPSDE
from scoresde_jax.samplers import (
    SAMPLERS,
    ddim_sample,
    dpm_solver_pp_sample,
    heun_sample,
    time_grid,
)
from scoresde_jax.config import get_sampling_fn
from scoresde_jax.samplers import exponential, karras
from test_samplers_ode import MU, VAR, exact_flow
from test_samplers_pc import N_SAMPLES, SCORES, SDES, check_ring, reference  # noqa: F401 (fixture)

FAST = {
    "ddim": (ddim_sample, 50),
    "dpm_solver_pp": (dpm_solver_pp_sample, 20),
    "heun": (heun_sample, 18),
}


@pytest.mark.parametrize(
    "method,sde_name",
    [
        ("dpm_solver_pp", "vp"),
        ("dpm_solver_pp", "subvp"),
        ("ddim", "vp"),
        ("ddim", "ve"),
        ("heun", "vp"),
        ("heun", "ve"),
    ],
)
def test_fast_samplers_reproduce_ring(method, sde_name, reference):
    fn, num_steps = FAST[method]
    sde, eps = SDES[sde_name]
    result = fn(
        SCORES[sde_name], sde, (N_SAMPLES, 2), jax.random.PRNGKey(11), num_steps=num_steps, eps=eps
    )
    assert int(result.nfe) == (2 * num_steps - 1 if method == "heun" else num_steps)
    check_ring(result.x, reference)


def test_ddim_stochastic_eta_one(reference):
    """eta = 1: the DDPM-posterior variance at every step (ancestral-like), still on target."""
    sde, eps = SDES["vp"]
    result = ddim_sample(
        SCORES["vp"], sde, (N_SAMPLES, 2), jax.random.PRNGKey(12), num_steps=100, eta=1.0, eps=eps
    )
    check_ring(result.x, reference)


def _observed_order(fn, sde, eps, steps=(21, 41)):
    with jax.enable_x64(True):
        score = exact_score_fn(gaussian(jnp.asarray(MU), jnp.asarray(VAR)), sde)
        x_T = sde.prior_std * jax.random.normal(jax.random.PRNGKey(0), (32, 2), jnp.float64)
        expected = exact_flow(sde, x_T, eps)
        errors = []
        for n in steps:
            r = fn(
                score,
                sde,
                (32, 2),
                jax.random.PRNGKey(1),
                num_steps=n,
                eps=eps,
                denoise=False,
                x_init=x_T,
            )
            assert r.x.dtype == jnp.float64
            errors.append(np.abs(np.asarray(r.x) - expected).max())
    # halving the step (n - 1 -> 2 (n - 1) steps) divides the error by 2^order
    return float(np.log2(errors[0] / errors[1]))


ORDERS = {"ddim": (0.85, 1.15), "dpm_solver_pp": (1.6, 2.4), "heun": (1.8, 2.3)}


@pytest.mark.parametrize("method", list(FAST))
def test_order_of_convergence_vp(method):
    lo, hi = ORDERS[method]
    sde, eps = SDES["vp"]
    order = _observed_order(FAST[method][0], sde, eps)
    assert lo < order < hi, order


@pytest.mark.slow
@pytest.mark.parametrize("sde_name", ["ve", "subvp"])
@pytest.mark.parametrize("method", list(FAST))
def test_order_of_convergence_ve_subvp(method, sde_name):
    lo, hi = ORDERS[method]
    sde, eps = SDES[sde_name]
    order = _observed_order(FAST[method][0], sde, eps)
    assert lo < order < hi, order


@pytest.mark.parametrize("kind", ["uniform", "quadratic", "logsnr", "edm"])
@pytest.mark.parametrize("sde_name", ["ve", "vp", "subvp"])
def test_time_grids(kind, sde_name):
    sde, eps = SDES[sde_name]
    ts = np.asarray(time_grid(sde, 12, eps, kind))
    assert ts[0] == np.float32(1.0) and ts[-1] == np.float32(eps)
    assert np.all(np.diff(ts) < 0)
    sb = np.asarray(sde.marginal_std(jnp.asarray(ts)) / sde.mean_coeff(jnp.asarray(ts)), np.float64)
    u = np.linspace(0, 1, 12)
    if kind == "logsnr":
        np.testing.assert_allclose(
            np.log(sb), np.log(sb[0]) + u * (np.log(sb[-1]) - np.log(sb[0])), rtol=1e-4, atol=1e-4
        )
    elif kind == "quadratic":
        np.testing.assert_allclose(np.sqrt(ts), 1.0 + u * (np.sqrt(eps) - 1.0), rtol=1e-5)
    elif kind == "edm":
        r = 1 / 7
        np.testing.assert_allclose(
            sb, (sb[0] ** r + u * (sb[-1] ** r - sb[0] ** r)) ** 7, rtol=1e-4
        )


def _standard_normal_score(x, t):
    """Exact score of N(0, I) data under VP (cheap to compile)."""
    del t
    return -x


def test_nfe_without_denoise_and_errors():
    sde, eps = SDES["vp"]
    score = _standard_normal_score
    assert (
        int(ddim_sample(score, sde, (4, 2), jax.random.PRNGKey(0), num_steps=5, denoise=False).nfe)
        == 4
    )
    assert (
        int(heun_sample(score, sde, (4, 2), jax.random.PRNGKey(0), num_steps=5, denoise=False).nfe)
        == 8
    )
    with pytest.raises(ValueError, match="num_steps"):
        dpm_solver_pp_sample(score, sde, (4, 2), jax.random.PRNGKey(0), num_steps=1)
    with pytest.raises(ValueError, match="time grid"):
        heun_sample(score, sde, (4, 2), jax.random.PRNGKey(0), grid="cosine")
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(score, sde, (4, 2), jax.random.PRNGKey(0), eta=-1.0)


def _param_score(params, x, t):
    del t
    return -(x - params["mu"]) / params["var"]


def test_fast_samplers_compile_once():
    sde = VPSDE(N=50)
    jitted = {
        "ddim": exponential._ddim,
        "dpm_solver_pp": exponential._dpm_pp,
        "heun": karras._heun,
    }
    for method, (fn, _) in FAST.items():
        before = jitted[method]._cache_size()
        for i in range(3):
            params = {"mu": jnp.asarray(0.1 * i), "var": jnp.asarray(1.0 + i)}
            jax.block_until_ready(
                fn(Partial(_param_score, params), sde, (4, 2), jax.random.PRNGKey(i), num_steps=5).x
            )
        assert jitted[method]._cache_size() == before + 1, method


def _config(**sampling):
    config = ml_collections.ConfigDict()
    config.sampling = ml_collections.ConfigDict(
        dict(
            method="pc",
            predictor="reverse_diffusion",
            corrector="langevin",
            snr=0.16,
            n_steps_each=1,
            noise_removal=True,
            probability_flow=False,
        )
    )
    config.sampling.update(sampling)
    return config


def test_get_sampling_fn_official_keys():
    sde = VPSDE(N=50)
    score = _standard_normal_score
    shape = (8, 2)
    sample = get_sampling_fn(
        _config(predictor="none", corrector="ald", n_steps_each=2), sde, shape, 1e-3
    )
    result = sample(jax.random.PRNGKey(0), score)
    assert result.x.shape == shape and int(result.nfe) == 2 * 50
    expected = SAMPLERS["pc"].fn(
        score,
        sde,
        shape,
        jax.random.PRNGKey(0),
        predictor="none",
        corrector="ald",
        n_steps=2,
        eps=1e-3,
    )
    np.testing.assert_array_equal(np.asarray(result.x), np.asarray(expected.x))
    ode = get_sampling_fn(_config(method="ode"), sde, shape, 1e-3)(jax.random.PRNGKey(0), score)
    assert ode.x.shape == shape and int(ode.nfe) > 0
    dpm = get_sampling_fn(_config(method="dpm_solver_pp", num_steps=10), sde, shape, 1e-3)
    assert int(dpm(jax.random.PRNGKey(0), score).nfe) == 10
    with pytest.raises(ValueError, match="config.sampling.method"):
        get_sampling_fn(_config(method="ddpm"), sde, shape, 1e-3)
    with pytest.raises(ValueError, match="config.sampling.corrector"):
        get_sampling_fn(_config(corrector="hmc"), sde, shape, 1e-3)
    with pytest.raises(ValueError, match="ode_solver"):
        get_sampling_fn(_config(method="ode", ode_solver="lsoda"), sde, shape, 1e-3)
