"""The per-step callback of the samplers (k-diffusion's convention): called on the host once per
step with ``{"i", "t", "x", "denoised"}``, in step order, without changing the samples; without a
callback the traced program has no host callback at all."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from scoresde_jax import samplers
from scoresde_jax.analytic import exact_score_fn, ring_mixture
from scoresde_jax.sde import VESDE, VPSDE

SHAPE = (8, 2)
# method, nfe, steps the callback sees (grid points - 1, or PC levels)
CASES = [("ddim", 10, 9), ("unipc", 10, 9), ("dpm_solver_pp_3m", 8, 7), ("dpm_solver_pp_2s", 9, 4),
         ("heun", 9, 4), ("edm", 9, 4), ("pc", 60, 30)]


def _score(sde):
    return exact_score_fn(ring_mixture(4, 2.0, 0.3), sde)


@pytest.mark.parametrize("method,nfe,steps", CASES, ids=[c[0] for c in CASES])
def test_callback_once_per_step_in_order(method, nfe, steps):
    sde = VPSDE(N=100)
    score, key = _score(sde), jax.random.PRNGKey(1)
    log = []
    res = samplers.sample(score, sde, SHAPE, key, method=method, nfe=nfe, callback=log.append)
    plain = samplers.sample(score, sde, SHAPE, key, method=method, nfe=nfe)
    np.testing.assert_array_equal(np.asarray(res.x), np.asarray(plain.x))
    assert int(res.nfe) == int(plain.nfe)
    assert [info["i"] for info in log] == list(range(steps))
    ts = np.array([float(info["t"]) for info in log])
    assert ts[0] == pytest.approx(sde.T) and np.all(np.diff(ts) < 0), ts
    for info in log:
        assert sorted(info) == ["denoised", "i", "t", "x"]
        assert info["x"].shape == SHAPE and info["denoised"].shape == SHAPE
        assert np.all(np.isfinite(info["denoised"]))
    # the first state is the prior draw, the predictions near the end approach the samples
    last = np.abs(log[-1]["denoised"] - np.asarray(res.x)).mean()
    first = np.abs(log[0]["denoised"] - np.asarray(res.x)).mean()
    assert last < first


def test_adaptive_sde_callback_per_iteration_with_per_example_times():
    sde = VESDE(N=100)
    score = _score(sde)
    log = []
    res = samplers.sample(score, sde, SHAPE, jax.random.PRNGKey(2), method="adaptive_sde", nfe=21,
                          eps=1e-5, callback=log.append)
    assert [info["i"] for info in log] == list(range(len(log))) and 1 <= len(log) <= 10
    ts = np.stack([info["t"] for info in log])
    assert ts.shape == (len(log), SHAPE[0]) and np.all(np.diff(ts, axis=0) <= 0)
    assert int(res.nfe) <= 21


def test_no_callback_no_host_call_in_the_program():
    sde = VPSDE(N=100)
    score, key = _score(sde), jax.random.PRNGKey(0)
    for method, nfe, _ in CASES + [("adaptive_sde", 9, 0), ("dpm_solver_pp", 6, 0)]:
        plain = str(jax.make_jaxpr(
            lambda k: samplers.sample(score, sde, SHAPE, k, method=method, nfe=nfe).x)(key))
        with_cb = str(jax.make_jaxpr(lambda k: samplers.sample(
            score, sde, SHAPE, k, method=method, nfe=nfe, callback=lambda info: None).x)(key))
        assert "callback" not in plain, method
        assert "callback" in with_cb, method


def test_callback_refused_where_it_cannot_be_honoured():
    sde = VPSDE(N=100)
    score, key = _score(sde), jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="callback"):
        samplers.sample(score, sde, SHAPE, key, method="ode", callback=print)
    for method in ("ddim", "pc", "adaptive_sde"):
        with pytest.raises(TypeError, match="callback"):
            samplers.sample(score, sde, SHAPE, key, method=method, nfe=60, callback="print")
