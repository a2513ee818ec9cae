"""Moved to :mod:`scoresde_jax.training.optimizer`; this alias keeps ``scoresde_jax.optim`` imports working."""

from __future__ import annotations

from scoresde_jax.training.optimizer import OPTIMIZERS, learning_rate_schedule, make_optimizer  # noqa: F401
from scoresde_jax.utils import config_reexports  # noqa: E402

__getattr__ = config_reexports(__name__, "get_optimizer")
