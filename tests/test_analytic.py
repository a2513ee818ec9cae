"""The closed-form ground truth itself, against scipy and finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from scoresde_jax import analytic
from scoresde_jax import sde as sde_lib


def test_mixture_logp_matches_scipy():
    mix = analytic.ring_mixture(n=4, radius=1.5, std=0.3)
    x = jax.random.normal(jax.random.key(0), (7, 2))
    expected = np.log(sum(0.25 * scipy.stats.multivariate_normal(np.asarray(m), np.asarray(c)).pdf(np.asarray(x))
                          for m, c in zip(mix.means, mix.covs)))
    np.testing.assert_allclose(np.asarray(analytic.mixture_logp(mix, x)), expected, rtol=1e-5)


def test_marginal_and_score_under_vp():
    mix = analytic.ring_mixture(n=3)
    sde = sde_lib.VPSDE()
    x = jax.random.normal(jax.random.key(1), (5, 2))
    t = jnp.full((5,), 0.3)
    a, s = float(sde.mean_coeff(t)[0]), float(sde.marginal_std(t)[0])
    expected = np.log(sum(w * scipy.stats.multivariate_normal(a * np.asarray(m), a**2 * np.asarray(c)
                                                               + s**2 * np.eye(2)).pdf(np.asarray(x))
                          for w, m, c in zip(mix.weights, mix.means, mix.covs)))
    np.testing.assert_allclose(np.asarray(analytic.marginal_logp(mix, sde, x, t)), expected, rtol=1e-5)
    # score = finite-difference gradient of the log density
    score = np.asarray(analytic.exact_score_fn(mix, sde)(x, t))
    h = 1e-3
    for d in range(2):
        e = jnp.zeros(2).at[d].set(h)
        fd = (analytic.marginal_logp(mix, sde, x + e, t) - analytic.marginal_logp(mix, sde, x - e, t)) / (2 * h)
        np.testing.assert_allclose(score[:, d], np.asarray(fd), rtol=2e-2, atol=2e-3)


def test_samples_and_moments():
    mix = analytic.GaussianMixture(jnp.array([0.3, 0.7]), jnp.array([[0.0, 1.0], [2.0, -1.0]]),
                                   jnp.stack([jnp.eye(2) * 0.5, jnp.array([[1.0, 0.5], [0.5, 1.0]])]), (2,))
    x = analytic.sample_mixture(mix, jax.random.key(2), 40000)
    np.testing.assert_allclose(np.asarray(jnp.mean(x, 0)), np.asarray(mix.mean), atol=0.03)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), np.asarray(mix.cov), atol=0.05)


def test_gaussian_event_shape_and_isotropic_score():
    g = analytic.gaussian(jnp.ones((2, 2, 1)), 0.25)
    assert g.event_shape == (2, 2, 1) and g.dim == 4
    sde = sde_lib.VESDE(sigma_min=0.1, sigma_max=10.0)
    x = jnp.zeros((3, 2, 2, 1))
    t = jnp.full((3,), 0.5)
    var = 0.25 + float(sde.marginal_std(t)[0]) ** 2
    np.testing.assert_allclose(np.asarray(analytic.exact_score_fn(g, sde)(x, t)), (1.0 - 0.0) / var, rtol=1e-5)


def test_sliced_wasserstein_of_shifted_gaussians():
    """SW_2 between a sample set and its shift by m: each projection is shifted by theta^T m, so
    SW_2^2 = E (theta^T m)^2 = |m|^2 / D; between independent sets it approaches the same value as n grows."""
    k1, k2, k3 = jax.random.split(jax.random.key(5), 3)
    x = jax.random.normal(k1, (2000, 2))
    m = jnp.array([1.0, 0.0])
    sw = float(analytic.sliced_wasserstein(x, x + m, k3, n_projections=2048))
    np.testing.assert_allclose(sw, np.sqrt(0.5), rtol=0.03)  # MC error over projections ~1%
    y = jax.random.normal(k2, (2000, 2)) + m
    sw_indep = float(analytic.sliced_wasserstein(x, y, k3, n_projections=2048))
    assert sw < sw_indep < sw + 0.15
    assert float(analytic.sliced_wasserstein(x, x, k3)) == 0.0


def test_mixture_passes_through_jit():
    mix = analytic.ring_mixture(n=4)
    x = jax.jit(lambda m, k: analytic.sample_mixture(m, k, 10))(mix, jax.random.key(0))
    assert x.shape == (10, 2)
