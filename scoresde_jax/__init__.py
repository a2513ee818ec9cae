"""scoresde_jax: score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX/Flax.

Submodules are imported on use (``from scoresde_jax import sde, losses, samplers, likelihood``) so that
``import scoresde_jax`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "analytic", "cli", "commands", "config", "controllable", "convert", "data",
    "evaluation", "likelihood", "losses", "metrics_io", "models", "parameterization", "samplers",
    "sde", "training", "utils",
)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"scoresde_jax.{name}")
    raise AttributeError(f"module 'scoresde_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
