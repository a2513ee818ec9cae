"""Moved: the jobs to :mod:`scoresde_jax.commands`, the steps and the loop to
:mod:`scoresde_jax.training`, config reading to :mod:`scoresde_jax.config`; this alias keeps the
common ``scoresde_jax.train`` names working."""

from __future__ import annotations

from scoresde_jax.commands import likelihood, sample, train, train_and_evaluate  # noqa: F401
from scoresde_jax.config import get_loss_fn, setup  # noqa: F401
from scoresde_jax.training import (  # noqa: F401
    EVAL_STREAM,
    SAMPLE_STREAM,
    TRAIN_STREAM,
    NonFiniteLossError,
    StepMetrics,
    make_eval_fn,
    make_step_fn,
    make_train_fn,
    stream_key,
)
