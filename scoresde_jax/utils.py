"""Small array helpers shared across the library."""

from __future__ import annotations

import importlib
from typing import Any, Callable

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


def config_reexports(module: str, *names: str) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` re-exporting ``names`` from :mod:`scoresde_jax.config`.

    The official score_sde names that read a config (``sde.get_sde``, ``models.create_model``,
    ``data.get_dataset``, ``samplers.get_sampling_fn``, ...) live at the one config boundary,
    :mod:`scoresde_jax.config`, which imports the math modules; re-exporting them lazily keeps
    ``from scoresde_jax.sde import get_sde`` working without an import cycle::

        __getattr__ = config_reexports(__name__, "get_sde")
    """
    exported = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in exported:
            return getattr(importlib.import_module("scoresde_jax.config"), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
