"""Moved to :mod:`scoresde_jax.training.state`; this alias keeps ``scoresde_jax.train_state`` imports working."""

from __future__ import annotations

from scoresde_jax.training.state import TrainState, abstract_state, create_train_state, ema_update, init_state  # noqa: F401
