"""Model output <-> score and time -> network label, as the official code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic
from scoresde_jax import parameterization as param
from scoresde_jax import sde as sde_lib


def test_labels():
    t = jnp.array([1e-3, 0.5, 1.0])
    ve, vp, sub = sde_lib.VESDE(), sde_lib.VPSDE(), sde_lib.subVPSDE()
    np.testing.assert_allclose(np.asarray(param.network_labels(ve, t)), np.asarray(ve.marginal_std(t)))
    np.testing.assert_allclose(np.asarray(param.network_labels(vp, t)), 999 * np.asarray(t), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(param.network_labels(sub, t, continuous=False)), 999 * np.asarray(t),
                               rtol=1e-6)
    lab = param.network_labels(ve, t, continuous=False)
    assert lab.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(lab), [998, 500, 0])  # round((T - t)(N - 1))
    # index k of the descending levels is (close to) sigma(t)
    desc = ve.discrete_sigmas[::-1]
    np.testing.assert_allclose(desc[np.asarray(lab)], np.asarray(ve.marginal_std(t)), rtol=0.02)


@pytest.mark.parametrize("sde", [sde_lib.VESDE(), sde_lib.VPSDE(), sde_lib.subVPSDE()])
@pytest.mark.parametrize("continuous", [True, False])
def test_round_trip(sde, continuous):
    x = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
    t = jnp.array([0.01, 0.2, 0.5, 0.99])
    out = param.score_to_output(sde, x, t, continuous=continuous)
    np.testing.assert_allclose(np.asarray(param.output_to_score(sde, out, t, continuous=continuous)),
                               np.asarray(x), rtol=1e-5)


def test_score_fn_from_exact_noise_predictor():
    """A network that predicts the noise exactly yields the exact score through get_score_fn (VP, continuous)."""
    sde = sde_lib.VPSDE()
    data = analytic.gaussian(jnp.zeros(3), 0.5)
    exact = analytic.exact_score_fn(data, sde)

    def model_fn(x, labels):
        t = labels / 999.0
        return param.score_to_output(sde, exact(x, t), t)

    score_fn = param.get_score_fn(sde, model_fn, continuous=True)
    x = jax.random.normal(jax.random.key(1), (5, 3))
    t = jnp.linspace(0.05, 1.0, 5)
    np.testing.assert_allclose(np.asarray(score_fn(x, t)), np.asarray(exact(x, t)), rtol=1e-4, atol=1e-5)


def test_discrete_vp_uses_ddpm_table():
    sde = sde_lib.VPSDE(N=50)
    t = jnp.array([0.0, 25 / 49, 1.0])
    out = jnp.ones((3, 2))
    score = param.output_to_score(sde, out, t, continuous=False)
    np.testing.assert_allclose(np.asarray(score[:, 0]), -1.0 / sde.sqrt_1m_alphas_cumprod[[0, 25, 49]], rtol=1e-5)
