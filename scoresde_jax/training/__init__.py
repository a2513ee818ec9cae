"""The training system: train state with EMA, the optax chain, jitted steps over a device mesh,
the loop, Orbax checkpoints and multi-host initialization.

===================  ==========================================================================
module               what it holds
===================  ==========================================================================
``state``            :class:`TrainState` (params, EMA params, optax state, step, base RNG key),
                     ``ema_update``, ``init_state`` / ``abstract_state`` over a mesh
``optimizer``        ``make_optimizer``: clip -> Adam with warmup (-> ``optax.MultiSteps``)
``steps``            ``make_train_fn`` / ``make_eval_fn``: jitted, ``lax.scan`` over steps, the
                     batch sharded on ``'data'``; ``stream_key`` (per-step randomness)
``loop``             ``train_loop(workdir, ...)`` with :class:`LoopOptions`
``checkpoint``       ``Checkpointer`` (periodic + preemption), ``restore_params``
``distributed``      mesh, shardings, global batches, ``initialize`` for several hosts
``workdir``          the workdir lock, ``config.json``, ``metrics.jsonl`` without replayed rows
===================  ==========================================================================

Nothing here reads a config: :mod:`scoresde_jax.config` builds the arguments and
:func:`scoresde_jax.commands.train` runs a whole job.
"""

from __future__ import annotations

from scoresde_jax.training import checkpoint, distributed, loop, optimizer, state, steps, workdir
from scoresde_jax.training.checkpoint import (
    CheckpointError,
    Checkpointer,
    NonFiniteStateError,
    has_checkpoints,
    restore_params,
)
from scoresde_jax.training.loop import LoopOptions, Preempted, TrainResult, train_loop
from scoresde_jax.training.workdir import WorkdirBusyError
from scoresde_jax.training.optimizer import learning_rate_schedule, make_optimizer
from scoresde_jax.training.state import (
    TrainState,
    abstract_state,
    create_train_state,
    ema_update,
    init_state,
)
from scoresde_jax.training.steps import (
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

__all__ = [
    "Checkpointer", "restore_params", "LoopOptions", "TrainResult", "train_loop",
    "CheckpointError", "NonFiniteStateError", "has_checkpoints", "Preempted", "WorkdirBusyError",
    "workdir",
    "learning_rate_schedule", "make_optimizer", "TrainState", "abstract_state",
    "create_train_state", "ema_update", "init_state", "EVAL_STREAM", "SAMPLE_STREAM",
    "TRAIN_STREAM", "NonFiniteLossError", "StepMetrics", "make_eval_fn", "make_step_fn",
    "make_train_fn", "stream_key", "checkpoint", "distributed", "loop", "optimizer", "state",
    "steps",
]
