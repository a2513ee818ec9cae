"""Small array helpers shared across the library."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batch_mul(a: jax.Array, x: jax.Array) -> jax.Array:
    """Multiply a per-example vector ``a`` of shape ``(B,)`` with ``x`` of shape ``(B, ...)``."""
    a = jnp.asarray(a)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def batch_sum(x: jax.Array) -> jax.Array:
    """Sum over every axis but the first: ``(B, ...) -> (B,)``."""
    return jnp.sum(x.reshape(x.shape[0], -1), axis=-1)


def batch_mean(x: jax.Array) -> jax.Array:
    """Mean over every axis but the first: ``(B, ...) -> (B,)``."""
    return jnp.mean(x.reshape(x.shape[0], -1), axis=-1)


def flat_dim(shape) -> int:
    """Number of data dimensions of an example of batched shape ``(B, *D)``."""
    d = 1
    for s in shape[1:]:
        d *= int(s)
    return d

