"""The training loop: dispatch jitted steps, log, evaluate, checkpoint, snapshot samples, resume.

:func:`train_loop` receives built objects (a compiled train step, a data iterator, a checkpoint
target) and a :class:`LoopOptions` with the cadence; it reads no config
(:func:`scoresde_jax.commands.train` builds everything from one). It writes under ``workdir``:

* ``metrics.jsonl`` and TensorBoard event files (train loss, gradient norm, eval loss);
* ``checkpoints/`` every ``snapshot_freq`` steps and ``checkpoints-meta/`` (the preemption
  checkpoint) every ``snapshot_freq_for_preemption`` steps and at an early stop, each holding the
  train state and the data iterator's position (:mod:`scoresde_jax.training.checkpoint`);
* ``samples/iter_<step>/sample.png`` (and ``.npy``) at each snapshot when a sample function is given.

A run started on a workdir with checkpoints resumes from the newest one with the same data order
and random numbers as an unbroken run. A non-finite loss stops the run with
:class:`~scoresde_jax.training.steps.NonFiniteLossError`; the checkpoints written before stay.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from scoresde_jax.metrics_io import MetricWriter, save_samples
from scoresde_jax.training import distributed
from scoresde_jax.training.checkpoint import Checkpointer
from scoresde_jax.training.state import TrainState
from scoresde_jax.training.steps import SAMPLE_STREAM, NonFiniteLossError, StepMetrics, stream_key

log = logging.getLogger("scoresde_jax.training")


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """The cadence of a run (``config.training`` keys of the same names).

    Checkpoints, logs and the end of training fall between dispatches of ``n_jitted_steps`` steps,
    so every frequency must be a multiple of it. ``snapshot_freq = 0`` snapshots only at
    ``n_iters``; ``eval_freq`` / ``snapshot_freq_for_preemption = 0`` turn those off;
    ``keep_checkpoints = 0`` keeps every snapshot.
    """

    n_iters: int
    n_jitted_steps: int = 1
    log_freq: int = 50
    eval_freq: int = 0
    snapshot_freq: int = 0
    snapshot_freq_for_preemption: int = 0
    keep_checkpoints: int = 0

    def __post_init__(self):
        if self.n_iters < 0 or self.n_jitted_steps < 1 or self.log_freq < 1:
            raise ValueError(
                f"training.n_iters={self.n_iters} must be >= 0, training.n_jitted_steps="
                f"{self.n_jitted_steps} and training.log_freq={self.log_freq} >= 1.")
        for key in ("snapshot_freq", "log_freq", "eval_freq", "snapshot_freq_for_preemption"):
            value = getattr(self, key)
            if value < 0 or value % self.n_jitted_steps:
                raise ValueError(
                    f"training.{key}={value} is not a non-negative multiple of training."
                    f"n_jitted_steps={self.n_jitted_steps}; checkpoints, logs and the end of "
                    f"training happen between dispatches of {self.n_jitted_steps} steps.")


class TrainResult(NamedTuple):
    state: TrainState
    step: int
    metrics: dict  # the last logged scalars
    workdir: str


def iterator_state(it: Any) -> Any:
    """The JSON-able position of a data iterator (``get_state()``), or None."""
    fn = getattr(it, "get_state", None)
    return fn() if callable(fn) else None


def restore_iterator(it: Any, state: Any) -> None:
    """Move a data iterator to a checkpointed position (``set_state``)."""
    if not state:
        return
    if jax.process_index() != 0:
        # Only process 0's state is in the checkpoint; the position (a function of the step) is
        # shared, the fingerprint names process 0's shard.
        state = {k: v for k, v in state.items() if k != "fingerprint"}
    fn = getattr(it, "set_state", None)
    if not callable(fn):
        raise ValueError(
            "The data iterator cannot restore its position (no set_state); a resumed run would not "
            "see the same data order. Use a checkpointable dataset from scoresde_jax.data.")
    fn(state)


def _images(batch: Any) -> np.ndarray:
    return np.asarray(batch["image"] if isinstance(batch, dict) else batch)


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)


def _check_finite(losses: np.ndarray, step: int, ckpt: Checkpointer, workdir: str) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if not bad.size:
        return
    ckpt.wait()
    last = ckpt.latest_step()
    msg = (f"Training stopped: loss is {losses[bad[0]]} at step {step + int(bad[0]) + 1}. The last "
           "good checkpoint " + (f"is step {last} under {workdir}" if last is not None
                                 else "does not exist (none saved yet)")
           + "; it was kept. Lower optim.lr, check optim.grad_clip and the data scaling, then resume.")
    log.error(msg)
    raise NonFiniteLossError(msg)


def train_loop(
    workdir: str,
    *,
    train_fn: Callable[[TrainState, Any], tuple[TrainState, StepMetrics]],
    init_state: Callable[[], TrainState],
    abstract_state: TrainState,
    train_iter: Iterator,
    mesh: jax.sharding.Mesh,
    options: LoopOptions,
    batch_size: int,
    preprocess: Callable[[np.ndarray], np.ndarray] = lambda x: x,
    eval_fn: Callable[[TrainState, Any], jax.Array] | None = None,
    eval_iter: Iterator | None = None,
    sample_fn: Callable[[Any, jax.Array], Any] | None = None,
    stop_at: int | None = None,
    progress: bool = True,
    description: str = "a score model",
) -> TrainResult:
    """Train (or resume) until ``options.n_iters`` (or ``stop_at``, an early stop that saves a
    preemption checkpoint); return the final state, step and last logged metrics.

    ``train_fn(state, batches)`` runs ``batches.shape[0]`` steps
    (:func:`~scoresde_jax.training.steps.make_train_fn`); ``init_state()`` makes the step-0 state
    when ``workdir`` has no checkpoint, ``abstract_state`` is the restore target otherwise.
    ``train_iter`` yields this process's numpy batches (``batch_size`` is the global size), mapped
    by ``preprocess`` (the data scaler). ``eval_fn``/``eval_iter`` give the eval loss every
    ``eval_freq`` steps; ``sample_fn(ema_params, rng)`` the snapshot samples.
    """
    o, main = options, distributed.is_main_process()
    workdir = os.path.abspath(workdir)
    if o.eval_freq and (eval_fn is None or eval_iter is None):
        raise ValueError("training.eval_freq > 0 needs an eval step and an eval data iterator.")
    ckpt = Checkpointer(workdir, max_to_keep=o.keep_checkpoints or None)
    restored = ckpt.restore_latest(abstract_state)
    if restored is not None:
        state = restored.state
        restore_iterator(train_iter, restored.data_state)
        log.info("Resumed from %s at step %d.", restored.directory, restored.step)
    else:
        state = init_state()
    step = int(distributed.to_host(state.step))
    local_bs = int(batch_size) // jax.process_count()
    snapshot_freq = o.snapshot_freq or o.n_iters
    writer = MetricWriter(workdir, active=main)
    if main:
        log.info(
            "Training %s on %d device(s) x %d process(es), global batch %d, %d steps. Workdir %s: "
            "checkpoints in %s and %s, metrics in %s (TensorBoard event files alongside), samples "
            "in %s.", description, mesh.devices.size, jax.process_count(), batch_size, o.n_iters,
            workdir, ckpt.snapshots.directory, ckpt.preemption.directory, writer.jsonl_path,
            os.path.join(workdir, "samples"))
    bar = _progress(o.n_iters, step, progress and main)
    metrics: dict = {}
    end = o.n_iters if stop_at is None else min(o.n_iters, int(stop_at))
    t0 = time.perf_counter()
    try:
        while step < end:
            # Dispatches end on multiples of n_jitted_steps; the last one may be shorter
            # (n_iters = 1300001 in the paper's configs), as may the first after resuming from an
            # early stop: one more compile.
            k = min(o.n_jitted_steps - step % o.n_jitted_steps, end - step)
            chunk = [preprocess(_images(next(train_iter))) for _ in range(k)]
            for x in chunk:
                if x.shape[0] != local_bs:
                    raise ValueError(
                        f"Data iterator gave a batch of {x.shape[0]} on this process; expected "
                        f"training.batch_size / process_count = {local_bs}.")
            state, m = train_fn(state, distributed.global_batch(np.stack(chunk), mesh, leading=1))
            losses = distributed.to_host(m.loss)
            _check_finite(losses, step, ckpt, workdir)
            step += k
            if bar is not None:
                bar.update(k)
                bar.set_postfix(loss=f"{float(losses[-1]):.4g}", refresh=False)
            if step % o.log_freq == 0 or step == end:
                norms = distributed.to_host(m.grad_norm)
                metrics = {"train/loss": float(losses[-1]), "train/grad_norm": float(norms[-1])}
                writer.write_scalars(step, metrics)
                if bar is None and main:
                    log.info("step %d: loss %.5g (%.1fs)", step, metrics["train/loss"],
                             time.perf_counter() - t0)
            if o.eval_freq and step % o.eval_freq == 0:
                xb = distributed.global_batch(preprocess(_images(next(eval_iter))), mesh)
                metrics["eval/loss"] = float(distributed.to_host(eval_fn(state, xb)))
                writer.write_scalars(step, {"eval/loss": metrics["eval/loss"]})
            snapshot = step % snapshot_freq == 0 or step == o.n_iters
            preempt = o.snapshot_freq_for_preemption and step % o.snapshot_freq_for_preemption == 0
            if not snapshot and (preempt or step == end):  # also when stopped early
                ckpt.save(step, state, iterator_state(train_iter), preemption=True)
            if snapshot:
                ckpt.save(step, state, iterator_state(train_iter))
                if sample_fn is not None:
                    _snapshot_samples(sample_fn, state, step, workdir, writer)
        writer.flush()
    finally:
        if bar is not None:
            bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    if main:
        log.info("Training reached step %d; checkpoints under %s.", step, workdir)
    return TrainResult(state, step, metrics, workdir)


def _snapshot_samples(sample_fn, state: TrainState, step: int, workdir: str,
                      writer: MetricWriter) -> None:
    samples = distributed.to_host(sample_fn(state.ema_params,
                                            stream_key(state.rng, SAMPLE_STREAM, step)))
    path = os.path.join(workdir, "samples", f"iter_{step}", "sample.png")
    if distributed.is_main_process():
        save_samples(samples, path)
        if samples.ndim == 4:
            writer.write_images(step, {"samples": samples})
        log.info("Step %d: samples written to %s", step, path)
