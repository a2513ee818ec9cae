"""Closed-form scores and densities of Gaussian-mixture data under the paper's SDEs.

For data ``p_0 = sum_k w_k N(mu_k, Sigma_k)`` and a linear SDE with kernel ``N(a(t) x_0, s(t)^2 I)``, every marginal
is again a mixture,

    p_t = sum_k w_k N(a(t) mu_k, a(t)^2 Sigma_k + s(t)^2 I),

so its score ``grad log p_t`` and log density are exact.  These serve as ground truth in the tests (samplers,
likelihoods, controllable generation) and as a perfect "network" in notebooks.  Data of any event shape ``D`` is
flattened to ``prod(D)`` dimensions.
"""

from __future__ import annotations

import math
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from scoresde_jax.sde import SDE

__all__ = [
    "GaussianMixture",
    "gaussian",
    "mixture_logp",
    "marginal_logp",
    "exact_score_fn",
    "sample_mixture",
    "ring_mixture",
    "sliced_wasserstein",
]


@struct.dataclass
class GaussianMixture:
    """``sum_k weights[k] N(means[k], covs[k])`` over ``D = prod(event_shape)`` flattened dimensions.

    A pytree whose leaves are the arrays; ``event_shape`` is static, so a mixture can be passed through ``jax.jit``.
    """

    weights: jax.Array  # (K,)
    means: jax.Array  # (K, D)
    covs: jax.Array  # (K, D, D)
    event_shape: tuple = struct.field(pytree_node=False, default=())

    @property
    def dim(self) -> int:
        return int(self.means.shape[-1])

    @property
    def mean(self) -> jax.Array:
        """Mixture mean ``sum_k w_k mu_k``."""
        return jnp.einsum("k,kd->d", self.weights, self.means)

    @property
    def cov(self) -> jax.Array:
        """Mixture covariance ``sum_k w_k (Sigma_k + mu_k mu_k^T) - mu mu^T``."""
        m = self.mean
        second = jnp.einsum("k,kde->de", self.weights, self.covs + jnp.einsum("kd,ke->kde", self.means, self.means))
        return second - jnp.outer(m, m)


def gaussian(mean, cov, event_shape=None) -> GaussianMixture:
    """A single Gaussian ``N(mean, cov)``; ``cov`` may be a scalar variance, a vector (diagonal) or a matrix."""
    mean = jnp.asarray(mean)
    if event_shape is None:
        event_shape = tuple(mean.shape)
    mean = mean.reshape(-1)
    d = mean.shape[0]
    cov = jnp.asarray(cov, mean.dtype)
    if cov.ndim == 0:
        cov = cov * jnp.eye(d, dtype=mean.dtype)
    elif cov.ndim == 1:
        cov = jnp.diag(cov)
    return GaussianMixture(jnp.ones((1,), mean.dtype), mean[None], cov[None], tuple(int(d) for d in event_shape))


def ring_mixture(n: int = 8, radius: float = 2.0, std: float = 0.2, dtype=None) -> GaussianMixture:
    """``n`` equal-weight isotropic Gaussians on a circle (a classic 2-D toy target)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    ang = 2 * np.pi * np.arange(n) / n
    means = radius * np.stack([np.cos(ang), np.sin(ang)], -1)
    covs = np.broadcast_to(std**2 * np.eye(2), (n, 2, 2))
    return GaussianMixture(jnp.full((n,), 1.0 / n, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype), (2,))


def mixture_logp(mix: GaussianMixture, x: jax.Array) -> jax.Array:
    """Per-example ``log sum_k w_k N(x; mu_k, Sigma_k)`` for ``x`` of shape ``(B, *event_shape)``."""
    xf = x.reshape(x.shape[0], -1)
    dtype = xf.dtype
    d = xf.shape[-1]

    def comp(mu, cov):
        chol = jnp.linalg.cholesky(cov.astype(dtype))
        diff = xf - mu.astype(dtype)
        sol = jax.scipy.linalg.solve_triangular(chol, diff.T, lower=True)
        maha = jnp.sum(sol**2, axis=0)
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
        return -0.5 * (maha + logdet + d * math.log(2 * math.pi))

    comps = jax.vmap(comp)(mix.means, mix.covs)  # (K, B)
    return jax.scipy.special.logsumexp(comps + jnp.log(mix.weights.astype(dtype))[:, None], axis=0)


def marginal_mixture(mix: GaussianMixture, sde: SDE, t) -> GaussianMixture:
    """The mixture ``p_t`` at a scalar time ``t``."""
    t = jnp.asarray(t).reshape(1)
    a = sde.mean_coeff(t)[0]
    s = sde.marginal_std(t)[0]
    eye = jnp.eye(mix.dim, dtype=mix.covs.dtype)
    return GaussianMixture(mix.weights, a * mix.means, a**2 * mix.covs + s**2 * eye, mix.event_shape)


def marginal_logp(mix: GaussianMixture, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    """Per-example ``log p_t(x)`` with a per-example time vector ``t`` of shape ``(B,)``.

    Uses the eigendecomposition ``Sigma_k = U_k diag(lam_k) U_k^T`` (computed once per call), so that
    ``a^2 Sigma_k + s^2 I = U_k diag(a^2 lam_k + s^2) U_k^T`` needs no factorization per example or time.
    """
    xf = x.reshape(x.shape[0], -1)
    dtype = xf.dtype
    d = xf.shape[-1]
    t = jnp.broadcast_to(jnp.asarray(t, dtype), (x.shape[0],))
    a = sde.mean_coeff(t)[:, None, None]  # (B, 1, 1)
    s = sde.marginal_std(t)[:, None, None]
    lam, u = jnp.linalg.eigh(mix.covs.astype(dtype))  # (K, D), (K, D, D)
    lam = jnp.maximum(lam, 0.0)
    diff = xf[:, None, :] - a * mix.means.astype(dtype)[None]  # (B, K, D)
    proj = jnp.einsum("bkd,kde->bke", diff, u)  # coordinates in each component's eigenbasis
    var = a**2 * lam[None] + s**2  # (B, K, D)
    comps = -0.5 * (jnp.sum(proj**2 / var + jnp.log(var), axis=-1) + d * math.log(2 * math.pi))
    return jax.scipy.special.logsumexp(comps + jnp.log(mix.weights.astype(dtype))[None], axis=-1)


def exact_score_fn(mix: GaussianMixture, sde: SDE):
    """``score_fn(x, t) = grad_x log p_t(x)``, exact for mixture data (any batch shape ``(B, *event_shape)``)."""

    def score_fn(x, t):
        return jax.grad(lambda y: jnp.sum(marginal_logp(mix, sde, y, t)))(x)

    return score_fn


def sample_mixture(mix: GaussianMixture, rng: jax.Array, n: int, dtype=None) -> jax.Array:
    """``n`` exact samples of shape ``(n, *event_shape)``."""
    dtype = mix.means.dtype if dtype is None else dtype
    k_c, k_z = jax.random.split(rng)
    comp = jax.random.choice(k_c, mix.weights.shape[0], (n,), p=mix.weights)
    chol = jnp.linalg.cholesky(mix.covs.astype(dtype))[comp]
    z = jax.random.normal(k_z, (n, mix.dim), dtype)
    x = mix.means.astype(dtype)[comp] + jnp.einsum("nde,ne->nd", chol, z)
    return x.reshape((n,) + tuple(mix.event_shape or (mix.dim,)))


def sliced_wasserstein(x: jax.Array, y: jax.Array, rng: jax.Array, *, n_projections: int = 256) -> jax.Array:
    """Sliced 2-Wasserstein distance between two equal-size sample sets (flattened to ``(n, D)``).

    ``SW_2(x, y)^2 = E_theta W_2^2(theta^T x, theta^T y)`` over random unit directions ``theta``; each 1-D W_2 is
    the distance between sorted projections.  Returns ``SW_2`` (same units as the data).
    """
    x = x.reshape(x.shape[0], -1)
    y = y.reshape(y.shape[0], -1).astype(x.dtype)
    if x.shape != y.shape:
        raise ValueError(f"sliced_wasserstein needs sample sets of equal shape, got {x.shape} and {y.shape}.")
    theta = jax.random.normal(rng, (x.shape[1], n_projections), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    px = jnp.sort(x @ theta, axis=0)
    py = jnp.sort(y @ theta, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))
