"""Denoising score-matching losses: the exact score minimises them; weighting and reductions are as the paper."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic, losses
from scoresde_jax import sde as sde_lib
from scoresde_jax.parameterization import score_to_output
from scoresde_jax.utils import batch_mul

SDES = {"ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=5.0, N=100), "vp": sde_lib.VPSDE(N=100),
        "subvp": sde_lib.subVPSDE(N=100)}

DATA = analytic.gaussian(jnp.array([0.5, -1.0]), jnp.array([0.3, 0.8]))


def _draw(n=20000, seed=0, eps=1e-3):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = analytic.sample_mixture(DATA, k1, n)
    t = jax.random.uniform(k2, (n,), minval=eps, maxval=1.0)
    z = jax.random.normal(k3, x.shape)
    return x, t, z


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("likelihood_weighting", [False, True])
def test_exact_score_minimises_dsm(name, likelihood_weighting):
    """With common random numbers, the loss of ``exact + delta * u`` exceeds the loss of ``exact`` and its
    derivative in delta vanishes at 0 (the exact score is the stationary point of the expected loss)."""
    s = SDES[name]
    exact = analytic.exact_score_fn(DATA, s)
    x, t, z = _draw()
    direction = jnp.array([1.0, -0.5])

    def mean_loss(delta):
        def score_fn(y, tt):
            u = batch_mul(1.0 / s.marginal_std(tt), jnp.broadcast_to(direction, y.shape))
            return exact(y, tt) + delta * u

        return jnp.mean(losses.dsm_loss(score_fn, x, t, z, sde=s, likelihood_weighting=likelihood_weighting))

    mean_loss = jax.jit(mean_loss)
    l0 = float(mean_loss(0.0))
    for delta in (-0.3, 0.3):
        assert float(mean_loss(delta)) > l0
    grad0 = float(jax.jit(jax.grad(mean_loss))(0.0))
    curvature = float(jax.jit(jax.hessian(mean_loss))(0.0))
    # a stationary point: the slope is small against the curvature (MC error ~ 1/sqrt(n))
    assert abs(grad0) < 0.05 * curvature, (grad0, curvature)


@pytest.mark.parametrize("name", list(SDES))
def test_likelihood_weighting_is_g2_over_std2(name):
    s = SDES[name]
    x, t, z = _draw(n=64)
    score_fn = lambda y, tt: -1.3 * y + 0.1  # noqa: E731
    plain = losses.dsm_loss(score_fn, x, t, z, sde=s)
    weighted = losses.dsm_loss(score_fn, x, t, z, sde=s, likelihood_weighting=True)
    ratio = s.diffusion_coeff(t) ** 2 / s.marginal_std(t) ** 2
    np.testing.assert_allclose(np.asarray(weighted), np.asarray(plain * ratio), rtol=2e-5)


@pytest.mark.parametrize("name", list(SDES))
def test_reduce_mean_vs_half_sum(name):
    s = SDES[name]
    x = jax.random.normal(jax.random.key(0), (8, 4, 4, 3))
    t = jnp.linspace(0.1, 0.9, 8)
    z = jax.random.normal(jax.random.key(1), x.shape)
    score_fn = lambda y, tt: -y  # noqa: E731
    total = losses.dsm_loss(score_fn, x, t, z, sde=s)
    mean = losses.dsm_loss(score_fn, x, t, z, sde=s, reduce_mean=True)
    np.testing.assert_allclose(np.asarray(total), np.asarray(mean) * 0.5 * 48, rtol=1e-5)


def test_dsm_value_by_hand():
    s = SDES["vp"]
    x = jnp.array([[1.0, 2.0]])
    t = jnp.array([0.5])
    z = jnp.array([[0.3, -0.4]])
    score_fn = lambda y, tt: -2.0 * y  # noqa: E731
    a, std = float(s.mean_coeff(t)[0]), float(s.marginal_std(t)[0])
    xt = a * np.array([1.0, 2.0]) + std * np.array([0.3, -0.4])
    expected = 0.5 * np.sum((std * (-2.0 * xt) + np.array([0.3, -0.4])) ** 2)
    np.testing.assert_allclose(float(losses.dsm_loss(score_fn, x, t, z, sde=s)[0]), expected, rtol=1e-5)


def test_smld_loss_uses_descending_levels_and_matches_dsm():
    """Label k selects sigma_{N-1-k}; the SMLD loss at a level equals the continuous DSM loss at the time of
    that level (both weight by sigma^2)."""
    s = SDES["ve"]
    exact = analytic.exact_score_fn(DATA, s)
    x, _, z = _draw(n=16)
    labels = jnp.arange(16) * 6
    sig = jnp.asarray(s.discrete_sigmas[::-1].copy())[labels]
    t = jnp.log(sig / s.sigma_min) / np.log(s.sigma_max / s.sigma_min)
    model_fn = lambda y, lab: exact(y, t)  # noqa: E731
    smld = losses.smld_loss(model_fn, x, labels, z, sde=s)
    dsm = losses.dsm_loss(exact, x, t, z, sde=s)
    np.testing.assert_allclose(np.asarray(smld), np.asarray(dsm), rtol=1e-4)
    assert float(sig[0]) == pytest.approx(s.sigma_max)


def test_ddpm_loss_minimised_by_exact_noise_prediction():
    s = SDES["vp"]
    n = 20000
    k1, k2, k3 = jax.random.split(jax.random.key(4), 3)
    x = analytic.sample_mixture(DATA, k1, n)
    labels = jax.random.randint(k2, (n,), 0, s.N)
    z = jax.random.normal(k3, x.shape)
    ab = jnp.asarray(s.alphas_cumprod)
    cov0 = jnp.diagonal(DATA.covs[0])
    mu0 = DATA.means[0]

    def eps_model(delta):
        def model_fn(y, lab):
            a, v = ab[lab][:, None], 1 - ab[lab][:, None]
            score = -(y - jnp.sqrt(a) * mu0) / (a * cov0 + v)  # exact score of the discrete marginal
            return -jnp.sqrt(v) * score + delta

        return model_fn

    base = float(jnp.mean(losses.ddpm_loss(eps_model(0.0), x, labels, z, sde=s)))
    assert float(jnp.mean(losses.ddpm_loss(eps_model(0.2), x, labels, z, sde=s))) > base
    assert float(jnp.mean(losses.ddpm_loss(eps_model(-0.2), x, labels, z, sde=s))) > base


def test_wrong_sde_for_discrete_losses():
    x = jnp.ones((2, 2))
    with pytest.raises(TypeError, match="VESDE"):
        losses.smld_loss(lambda y, lab: y, x, jnp.zeros(2, jnp.int32), x, sde=SDES["vp"])
    with pytest.raises(TypeError, match="VPSDE"):
        losses.ddpm_loss(lambda y, lab: y, x, jnp.zeros(2, jnp.int32), x, sde=SDES["subvp"])


class _TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, labels, train=False):
        h = nn.Dense(8)(x.reshape(x.shape[0], -1))
        h = h + nn.Dense(8)(jnp.asarray(labels, x.dtype)[:, None] / 100.0)
        h = nn.Dropout(0.1, deterministic=not train)(nn.swish(h))
        return nn.Dense(x[0].size)(h).reshape(x.shape)


@pytest.mark.parametrize("name,continuous,lw", [("ve", True, False), ("ve", False, False), ("vp", True, True),
                                                ("vp", False, False), ("subvp", True, False)])
def test_get_loss_fn_trains_tiny_model(name, continuous, lw):
    s = SDES[name]
    model = _TinyNet()
    x = jax.random.normal(jax.random.key(0), (16, 2, 2, 1))
    params = model.init(jax.random.key(1), x, jnp.zeros(16))["params"]
    loss_fn = losses.get_loss_fn(s, model, train=True, continuous=continuous, likelihood_weighting=lw)
    (loss, aux), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, {"image": x}, jax.random.key(2))
    assert np.isfinite(float(loss)) and aux.per_example.shape == (16,)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    eval_fn = losses.get_loss_fn(s, model, train=False, continuous=continuous, likelihood_weighting=lw)
    l1, _ = eval_fn(params, x, jax.random.key(3))
    l2, _ = eval_fn(params, x, jax.random.key(3))
    assert float(l1) == float(l2)


def test_get_loss_fn_bad_combinations():
    with pytest.raises(ValueError, match="sub-VP"):
        losses.get_loss_fn(SDES["subvp"], _TinyNet(), train=True, continuous=False)
    with pytest.raises(ValueError, match="likelihood_weighting"):
        losses.get_loss_fn(SDES["vp"], _TinyNet(), train=True, continuous=False, likelihood_weighting=True)


def test_score_to_output_is_noise_prediction():
    s = SDES["vp"]
    x, t, z = _draw(n=8)
    mean, std = s.marginal_prob(x, t)
    xt = mean + batch_mul(std, z)
    cond_score = -batch_mul(1.0 / std, z)
    np.testing.assert_allclose(np.asarray(score_to_output(s, cond_score, t)), np.asarray(z), rtol=1e-5)
    del xt


def test_losses_follow_float64(x64):
    s = SDES["vp"]
    x = jnp.ones((4, 2), jnp.float64)
    out = losses.dsm_loss_from_key(lambda y, tt: -y, x, jax.random.key(0), sde=s, likelihood_weighting=True)
    assert out.dtype == jnp.float64
    out = losses.ddpm_loss_from_key(lambda y, lab: y, x, jax.random.key(0), sde=s)
    assert out.dtype == jnp.float64
