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


def test_network_adapter_is_a_pytree_with_params_as_data():
    """get_score_fn(sde, get_model_fn(model, params)) is a Partial whose data are the parameters:
    one jitted function compiles once for all parameters (and equal adapters built apart), and
    ``score(x, t, y)`` passes class labels to a conditional network."""
    from scoresde_jax.models import MLP

    sde = sde_lib.VPSDE(N=51)
    model = MLP(hidden_sizes=(8,), num_classes=2)
    x, t = jax.random.normal(jax.random.key(0), (4, 2)), jnp.linspace(0.1, 0.9, 4)
    p0 = model.init(jax.random.key(0), x, t)["params"]
    p1 = jax.tree.map(lambda a: a + 1.0, p0)
    apply = jax.jit(lambda score, x_, t_: score(x_, t_))
    outs = [apply(param.get_score_fn(sde, param.get_model_fn(model, p)), x, t) for p in (p0, p1, p0)]
    assert apply._cache_size() == 1
    assert not np.allclose(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
    score = param.get_score_fn(sde, param.get_model_fn(model, p0))
    y = jnp.array([0, 1, 1, 0])
    out = model.apply({"params": p0}, x, 50.0 * t, class_labels=y)
    np.testing.assert_allclose(score(x, t, y), param.output_to_score(sde, out, t), rtol=1e-6)
    logits = param.get_logits_fn(sde, param.get_model_fn(model, p0))
    np.testing.assert_allclose(logits(x, t), model.apply({"params": p0}, x, 50.0 * t), rtol=1e-6)
    with pytest.raises(ValueError, match="rng"):
        param.get_model_fn(model, p0, train=True)
