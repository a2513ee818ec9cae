"""Sample quality for the 2-D toy mixtures: sliced Wasserstein distances to exact samples.

For a ``TOY_*`` dataset the target is a known :class:`~scoresde_jax.analytic.GaussianMixture`, so
samples are compared with exact draws from it by the sliced 2-Wasserstein distance

    SW_2(x, y)^2 = E_theta W_2^2(theta^T x, theta^T y)

(:func:`scoresde_jax.analytic.sliced_wasserstein`). :func:`toy_metrics` reports it next to two
calibration points that use the same projections: the sampling-noise floor (two exact sets of the
same size) and the N(0, I) prior (what an untrained VP model samples).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.analytic import GaussianMixture, sample_mixture, sliced_wasserstein
from scoresde_jax.data import get_toy_distribution

__all__ = ["toy_metrics"]


def toy_metrics(
    distribution: GaussianMixture | str,
    samples: Any,
    *,
    seed: int = 0,
    n_projections: int = 256,
) -> dict[str, float]:
    """Sliced Wasserstein distances of ``samples`` (N, D) to the mixture ``distribution``.

    ``distribution`` is a :class:`~scoresde_jax.analytic.GaussianMixture` or a toy dataset name
    (``'TOY_8GAUSSIANS'``, looked up with :func:`scoresde_jax.data.get_toy_distribution`).

    Returns ``{'swd', 'swd_floor', 'swd_prior'}``: ``swd`` is samples vs N exact target samples
    (``inf`` when the samples are not finite); ``swd_floor`` is between two exact sets of size N
    (the sampling-noise floor); ``swd_prior`` is N(0, I) samples vs the target. All three use the
    same ``n_projections`` random directions drawn from ``seed``.
    """
    if isinstance(distribution, str):
        distribution = get_toy_distribution(distribution.upper())
    if not isinstance(distribution, GaussianMixture):
        raise TypeError(
            "toy_metrics needs a GaussianMixture or a toy dataset name such as 'TOY_8GAUSSIANS', "
            f"got {type(distribution).__name__}."
        )
    x = np.asarray(samples, np.float32)
    if x.ndim < 2 or len(x) < 2:
        raise ValueError(f"toy_metrics needs samples of shape (N, D) with N >= 2, got {x.shape}.")
    x = jnp.asarray(x.reshape(len(x), -1))
    n = x.shape[0]
    k_a, k_b, k_p, k_proj = jax.random.split(jax.random.PRNGKey(int(seed)), 4)
    ref = sample_mixture(distribution, k_a, n, dtype=x.dtype).reshape(n, -1)
    ref2 = sample_mixture(distribution, k_b, n, dtype=x.dtype).reshape(n, -1)
    prior = jax.random.normal(k_p, x.shape, x.dtype)

    def swd(a: jax.Array, b: jax.Array) -> float:
        return float(sliced_wasserstein(a, b, k_proj, n_projections=n_projections))

    finite = bool(np.all(np.isfinite(np.asarray(x))))
    return {
        "swd": swd(x, ref) if finite else float("inf"),
        "swd_floor": swd(ref2, ref),
        "swd_prior": swd(prior, ref),
    }
