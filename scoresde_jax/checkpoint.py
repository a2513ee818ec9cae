"""Moved to :mod:`scoresde_jax.training.checkpoint`; this alias keeps ``scoresde_jax.checkpoint`` imports working."""

from __future__ import annotations

from scoresde_jax.training.checkpoint import Checkpointer, Restored, restore_params  # noqa: F401
