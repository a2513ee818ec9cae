"""2-D toy datasets: Gaussian mixtures with exact parameters, and what "vector data" means.

Each ``TOY_*`` dataset is a ``scoresde_jax.analytic.GaussianMixture``, so
``analytic.exact_score_fn(mix, sde)`` gives the exact score of every diffused marginal
``p_t = sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I)`` and samplers can be checked against it.
:func:`is_vector_dataset` and :func:`example_shape` are the one place that says whether a dataset
yields vectors ``(B, D)`` (the toy mixtures) or images ``(B, H, W, C)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from scoresde_jax.analytic import GaussianMixture, gaussian

__all__ = [
    "TOY_DISTRIBUTIONS",
    "example_shape",
    "get_toy_distribution",
    "is_vector_dataset",
    "mixture_sampler_np",
    "sample_mixture_np",
]


def _isotropic(means: np.ndarray, std: float) -> GaussianMixture:
    means = np.asarray(means, np.float64)
    k, d = means.shape
    dtype = jnp.result_type(float)
    covs = np.broadcast_to(std**2 * np.eye(d), (k, d, d))
    return GaussianMixture(
        jnp.full((k,), 1.0 / k, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype), (d,)
    )


def eight_gaussians(*, radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """8 equal-weight isotropic Gaussians at angles 2 pi k / 8 on a circle of ``radius``."""
    ang = 2.0 * np.pi * np.arange(8) / 8
    return _isotropic(radius * np.stack([np.cos(ang), np.sin(ang)], -1), std)


def grid_gaussians(*, n: int = 5, spacing: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """n x n equal-weight isotropic Gaussians on a grid centered at the origin (25 for n=5)."""
    c = (np.arange(n) - (n - 1) / 2) * spacing
    gx, gy = np.meshgrid(c, c, indexing="ij")
    return _isotropic(np.stack([gx.ravel(), gy.ravel()], -1), std)


def two_moons(*, per_moon: int = 16, std: float = 0.1) -> GaussianMixture:
    """Two interleaved half circles (sklearn ``make_moons`` geometry, centered) as a mixture of
    ``2 * per_moon`` isotropic Gaussians spaced along the arcs."""
    t = np.linspace(0.0, np.pi, per_moon)
    upper = np.stack([np.cos(t), np.sin(t)], -1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1)
    return _isotropic(np.concatenate([upper, lower]) - np.array([0.5, 0.25]), std)


def checkerboard(*, n: int = 4, sub: int = 3, std: float = 0.15) -> GaussianMixture:
    """Checkerboard on [-n/2, n/2]^2: each of the n^2/2 dark unit squares is covered by a
    ``sub x sub`` grid of isotropic Gaussians (so the density is an exact mixture)."""
    off = (np.arange(sub) + 0.5) / sub
    means = []
    for i in range(n):
        for j in range(n):
            if (i + j) % 2 == 0:
                for u in off:
                    for v in off:
                        means.append((i + u - n / 2, j + v - n / 2))
    return _isotropic(np.array(means), std)


def single_gaussian(
    *,
    mean: Sequence[float] = (1.0, -0.5),
    cov: Sequence[Sequence[float]] = ((1.0, 0.6), (0.6, 0.5)),
) -> GaussianMixture:
    """One correlated 2-D Gaussian (the simplest exact-score test case)."""
    dtype = jnp.result_type(float)
    return gaussian(jnp.asarray(mean, dtype), jnp.asarray(cov, dtype))


def mixture_sampler_np(
    mix: GaussianMixture,
) -> Callable[[np.random.Generator | int, int], tuple[np.ndarray, np.ndarray]]:
    """``sample(rng, n)`` of :func:`sample_mixture_np` with the mixture's host arrays and Cholesky
    factors computed once (an input pipeline draws a batch per step)."""
    w = np.asarray(mix.weights, np.float64)
    p = w / w.sum()
    means = np.asarray(mix.means, np.float64)
    chol = np.linalg.cholesky(np.asarray(mix.covs, np.float64))

    def sample(rng: np.random.Generator | int, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(rng)
        comp = rng.choice(len(p), size=n, p=p)
        z = rng.standard_normal((n, means.shape[1]))
        x = means[comp] + np.einsum("nij,nj->ni", chol[comp], z)
        return x.astype(np.float32), comp.astype(np.int32)

    return sample


def sample_mixture_np(
    mix: GaussianMixture, rng: np.random.Generator | int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` exact samples in numpy (input pipelines): ``(x (n, D) float32, component (n,))``."""
    return mixture_sampler_np(mix)(rng, n)


TOY_DISTRIBUTIONS: dict[str, Callable[[], GaussianMixture]] = {
    "TOY_8GAUSSIANS": eight_gaussians,
    "TOY_25GAUSSIANS": grid_gaussians,
    "TOY_MOONS": two_moons,
    "TOY_CHECKERBOARD": checkerboard,
    "TOY_GAUSSIAN": single_gaussian,
}


def get_toy_distribution(name: str) -> GaussianMixture:
    """The exact mixture behind a ``'TOY_*'`` dataset name."""
    if name not in TOY_DISTRIBUTIONS:
        raise ValueError(f"Unknown toy dataset {name!r}; valid: {sorted(TOY_DISTRIBUTIONS)}.")
    return TOY_DISTRIBUTIONS[name]()


def is_vector_dataset(name: str) -> bool:
    """True for vector (non-image) datasets, the ``TOY_*`` mixtures (any case): ``(B, D)``."""
    return str(name).upper() in TOY_DISTRIBUTIONS


def example_shape(name: str, *, image_size: int, num_channels: int) -> tuple[int, ...]:
    """Shape of one example of dataset ``name``: ``(D,)`` for vector data, else ``(H, W, C)`` =
    ``(image_size, image_size, num_channels)``."""
    if is_vector_dataset(name):
        return (get_toy_distribution(str(name).upper()).dim,)
    return (int(image_size), int(image_size), int(num_channels))
