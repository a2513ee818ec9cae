"""The training loop: dispatch jitted steps, log, evaluate, checkpoint, snapshot samples, resume.

:func:`train_loop` receives built objects (a compiled train step, a data iterator, a checkpoint
target) and a :class:`LoopOptions` with the cadence; it reads no config
(:func:`scoresde_jax.commands.train` builds everything from one). It writes under ``workdir``:

* ``metrics.jsonl`` and TensorBoard event files (train loss, gradient norm, eval loss);
* ``checkpoints/`` every ``snapshot_freq`` steps and ``checkpoints-meta/`` (the preemption
  checkpoint) every ``snapshot_freq_for_preemption`` steps and at an early stop, each holding the
  train state and the data iterator's position (:mod:`scoresde_jax.training.checkpoint`);
* ``samples/iter_<step>/grid.png`` (and ``.npy``) at each snapshot when a sample function is given.

A run started on a workdir with checkpoints resumes from the newest good one with the same data
order and random numbers as an unbroken run (``metrics.jsonl`` rows of replayed steps are dropped).
One run per workdir: a lock (:mod:`scoresde_jax.training.workdir`). SIGTERM (preemption notices of
TPU VMs, SLURM, Kubernetes) and SIGINT (Ctrl-C) finish the current dispatch, write a preemption
checkpoint and raise :class:`Preempted` (exit 0 for SIGTERM, 130 for SIGINT in the CLI); all
processes of a multi-host run agree on that step (after each dispatch, through the coordination
service's key-value store and a barrier: host messages, no wait for the device).
Metrics stay on the device between logs: the losses of the dispatches since the last fetch come
back in one transfer at log, eval and save steps (no per-step host sync). A background thread reads,
preprocesses and places the batches of the next ``PREFETCH`` dispatches on the mesh while the device
computes (:class:`Prefetcher`); checkpoints store the position of the batches actually trained on,
and the iterator is moved back there when the loop ends. A non-finite loss (in
that window), or non-finite params/EMA at a save, stops the run with
:class:`~scoresde_jax.training.steps.NonFiniteLossError` naming the newest saved step (every saved
step has finite params); the checkpoints written before stay.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from scoresde_jax.metrics_io import MetricWriter, save_samples
from scoresde_jax.training import distributed
from scoresde_jax.training import workdir as workdir_lib
from scoresde_jax.training.checkpoint import Checkpointer, NonFiniteStateError, has_checkpoints
from scoresde_jax.training.host import (  # noqa: F401 (iterator_state, PREFETCH: public here too)
    PREFETCH, Preempted, chunk_sizes, image_batch, Prefetcher, StopRequest, with_labels,
    iterator_state, restore_iterator)
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


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)


def _nonfinite_stop(what: str, ckpt: Checkpointer, workdir: str) -> NonFiniteLossError:
    ckpt.wait()
    last = ckpt.latest_step()
    msg = (f"Training stopped: {what}. The last good checkpoint "
           + (f"is step {last} under {workdir}" if last is not None
              else "does not exist (none saved yet)")
           + " (its params and EMA params are finite: a non-finite state is never saved); it was "
           "kept. Resume from it with a lower "
           "learning rate: run the same command with --config.optim.lr=<smaller> (check "
           "optim.grad_clip and the data scaling too).")
    log.error(msg)
    return NonFiniteLossError(msg)


def _check_finite(losses: np.ndarray, step: int, ckpt: Checkpointer, workdir: str) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        raise _nonfinite_stop(f"loss is {losses[bad[0]]} at step {step + int(bad[0]) + 1}",
                              ckpt, workdir)


def _fetch_window(pending: list, ckpt: Checkpointer, workdir: str) -> tuple[np.ndarray, np.ndarray]:
    """Losses and gradient norms of the pending dispatches in one device-to-host transfer (no
    per-step sync); stop on a non-finite loss before anything is logged or saved."""
    fetched = distributed.to_host([m for _, m in pending])
    for (first, _), m in zip(pending, fetched):
        _check_finite(m.loss, first, ckpt, workdir)
    pending.clear()
    return fetched[-1].loss, fetched[-1].grad_norm


def _save(ckpt: Checkpointer, step: int, state, data_state, workdir: str, record: Any = None,
          **kw) -> None:
    """Save ``step``; with ``record`` (the run's config, at the first save of a start) wait until
    it is committed, then write ``config.json`` (it describes the checkpoints beside it)."""
    try:
        ckpt.save(step, state, data_state, **kw)
    except NonFiniteStateError as e:
        raise _nonfinite_stop(str(e), ckpt, workdir) from e
    if record is not None:
        ckpt.wait()
        if distributed.is_main_process():
            workdir_lib.save_config(workdir, record)


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
    config: Any = None,
    allow_config_change: bool = False,
) -> TrainResult:
    """Train (or resume) until ``options.n_iters`` (or ``stop_at``, an early stop that saves a
    preemption checkpoint); return the final state, step and last logged metrics.

    ``train_fn(state, batches)`` runs ``batches.shape[0]`` steps
    (:func:`~scoresde_jax.training.steps.make_train_fn`); ``init_state()`` makes the step-0 state
    when ``workdir`` has no checkpoint (with an ``on_lowered`` keyword, as
    :meth:`~scoresde_jax.config.Setup.init_state` has, the train step's tracing starts once the
    init is traced), ``abstract_state`` is the restore target otherwise.
    ``train_iter`` yields this process's numpy batches (``batch_size`` is the global size), mapped
    by ``preprocess`` (the data scaler). ``eval_fn``/``eval_iter`` give the eval loss every
    ``eval_freq`` steps; ``sample_fn(ema_params, rng)`` the snapshot samples. ``config`` (any
    ``to_dict``-able) is checked against the ``config.json`` of existing checkpoints (its model,
    SDE and data may change only with ``allow_config_change``), appended to
    ``config_history.jsonl`` once the start is accepted, and written with the command line as
    ``config.json`` when its first checkpoint is committed (:mod:`~scoresde_jax.training.workdir`).

    Raises ValueError for an empty ``workdir`` or a file in its place (before anything is
    created), :class:`~scoresde_jax.training.workdir.ConfigChangeError` for a refused config
    change, :class:`~scoresde_jax.training.workdir.WorkdirBusyError` when another run holds the
    workdir, :class:`Preempted` after SIGTERM/SIGINT (a preemption checkpoint saved).
    """
    workdir = workdir_lib.check_workdir(workdir)
    lock = workdir_lib.WorkdirLock(workdir)
    if distributed.is_main_process():
        lock.acquire()
    try:
        stop = StopRequest()
        with stop.installed():
            return _train_loop(workdir, stop=stop, config=config,
                               allow_config_change=allow_config_change, train_fn=train_fn,
                               init_state=init_state, abstract_state=abstract_state,
                               train_iter=train_iter, mesh=mesh, options=options,
                               batch_size=batch_size, preprocess=preprocess, eval_fn=eval_fn,
                               eval_iter=eval_iter, sample_fn=sample_fn, stop_at=stop_at,
                               progress=progress, description=description)
    finally:
        lock.release()


def _train_loop(workdir, *, stop, config, allow_config_change, train_fn, init_state,
                abstract_state, train_iter, mesh, options, batch_size, preprocess, eval_fn,
                eval_iter, sample_fn, stop_at, progress, description) -> TrainResult:
    o, main = options, distributed.is_main_process()
    workdir = os.path.abspath(workdir)
    if o.eval_freq and (eval_fn is None or eval_iter is None):
        raise ValueError("training.eval_freq > 0 needs an eval step and an eval data iterator.")
    allowed = [] if config is None else workdir_lib.check_config_change(
        workdir, config, trained=has_checkpoints(workdir), allow=allow_config_change)
    ckpt = Checkpointer(workdir, max_to_keep=o.keep_checkpoints or None)
    restored = ckpt.restore(abstract_state, set_aside=main)
    state, step = None, 0  # a new run's state is made below, while its train step compiles
    if restored is not None:
        state = restored.state
        restore_iterator(train_iter, restored.data_state)
        log.info("Resumed from %s at step %d.", restored.directory, restored.step)
        step = int(distributed.to_host(state.step))
    if main and config is not None:
        workdir_lib.append_history(workdir, config, step=step, allowed=allowed)
    unsaved = config  # written as config.json at this start's first committed save
    if main:
        dropped = workdir_lib.drop_replayed_metrics(workdir, step)
        if dropped:
            log.info("Dropped %d metrics.jsonl rows after step %d (they are trained again).",
                     dropped, step)
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
    pending: list = []  # (first step, StepMetrics on device) of the dispatches not yet fetched
    end = o.n_iters if stop_at is None else min(o.n_iters, int(stop_at))

    def make(raw: list) -> Any:
        chunk = [preprocess(image_batch(b)) for b in raw]
        for x in chunk:
            if x.shape[0] != local_bs:
                raise ValueError(
                    f"Data iterator gave a batch of {x.shape[0]} on this process; expected "
                    f"training.batch_size / process_count = {local_bs}.")
        return distributed.global_batch(with_labels(np.stack(chunk), raw), mesh, leading=1)

    prefetch = Prefetcher(train_iter, chunk_sizes(step, end, o.n_jitted_steps), make)
    t0 = time.perf_counter()
    try:
        first = None
        if state is None and step < end:
            first = prefetch.get()
            state, train_fn = _init_while_compiling(init_state, train_fn, abstract_state, first[1])
        elif state is None:
            state = init_state()
        while step < end:
            k, batches = first if first is not None else prefetch.get()
            first = None
            state, m = train_fn(state, batches)
            pending.append((step, m))  # fetched (one transfer) at logs, evals and saves only
            step += k
            if bar is not None:
                bar.update(k)
            snapshot = step % snapshot_freq == 0 or step == o.n_iters
            preempt = o.snapshot_freq_for_preemption and step % o.snapshot_freq_for_preemption == 0
            if step % o.log_freq == 0 or step == end or snapshot or preempt or (
                    o.eval_freq and step % o.eval_freq == 0):
                losses, norms = _fetch_window(pending, ckpt, workdir)
            if step % o.log_freq == 0 or step == end:
                metrics = {"train/loss": float(losses[-1]), "train/grad_norm": float(norms[-1])}
                if bar is not None:
                    bar.set_postfix(loss=f"{metrics['train/loss']:.4g}", refresh=False)
                writer.write_scalars(step, metrics)
                if bar is None and main:
                    log.info("step %d: loss %.5g (%.1fs)", step, metrics["train/loss"],
                             time.perf_counter() - t0)
            if o.eval_freq and step % o.eval_freq == 0:
                eb = next(eval_iter)
                xb = distributed.global_batch(with_labels(preprocess(image_batch(eb)), [eb],
                                                            stacked=False), mesh)
                metrics["eval/loss"] = float(distributed.to_host(eval_fn(state, xb)))
                writer.write_scalars(step, {"eval/loss": metrics["eval/loss"]})
            signum = stop.agreed(step)
            if signum and pending:  # check the losses before the preemption save
                _fetch_window(pending, ckpt, workdir)
            if not snapshot and (preempt or step == end or signum):  # also when stopped early
                _save(ckpt, step, state, prefetch.position, workdir, unsaved, preemption=True)
                unsaved = None
            if snapshot:
                _save(ckpt, step, state, prefetch.position, workdir, unsaved)
                unsaved = None
                if sample_fn is not None and not signum:
                    _snapshot_samples(sample_fn, state, step, workdir, writer)
            if signum:
                ckpt.wait()
                writer.flush()
                log.warning("Stopped by %s at step %d; preemption checkpoint saved under %s.",
                            signal.Signals(signum).name, step, workdir)
                raise Preempted(signum, step, workdir)
        writer.flush()
    finally:
        prefetch.close()
        if bar is not None:
            bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    if main:
        log.info("Training reached step %d; checkpoints under %s.", step, workdir)
    return TrainResult(state, step, metrics, workdir)


def _init_while_compiling(init_state: Callable[[], TrainState], train_fn: Callable,
                          abstract_state: TrainState, batches: Any) -> tuple[TrainState, Callable]:
    """``init_state()``, computed while a second thread traces and compiles ``train_fn`` (a
    ``jax.jit`` function) for ``abstract_state`` and batches shaped like ``batches``.

    The thread starts tracing once the init program is traced (``init_state(on_lowered=...)``,
    when ``init_state`` takes it, as :meth:`Setup.init_state` does), so the step's Python tracing
    runs while XLA compiles the init outside Python's lock, instead of the two tracings taking
    turns at the lock. Returns the state and the train function to call: the compiled step
    for batches of this shape, ``train_fn`` for others (a shorter last dispatch). A failed
    compile is left to ``train_fn``'s first call, which raises it in the loop's thread."""
    if not hasattr(train_fn, "lower"):
        return init_state(), train_fn
    result: dict = {}
    traced = threading.Event()

    def compile_step() -> None:
        traced.wait()
        try:
            result["step"] = train_fn.lower(abstract_state, batches).compile()
        except Exception:  # noqa: BLE001 (raised again by train_fn's first call)
            pass

    thread = threading.Thread(target=compile_step, name="scoresde-compile", daemon=True)
    thread.start()
    try:
        if _takes_keyword(init_state, "on_lowered"):
            state = init_state(on_lowered=traced.set)
        else:
            traced.set()
            state = init_state()
    finally:
        traced.set()
        thread.join()
    compiled, spec = result.get("step"), _shapes(batches)
    if compiled is None:
        return state, train_fn

    def train_call(state: TrainState, batches: Any):
        nonlocal compiled
        if compiled is not None and _shapes(batches) == spec:
            try:
                return compiled(state, batches)
            except TypeError:  # argument types differ from the abstract ones (checked first)
                compiled = None
        return train_fn(state, batches)

    return state, train_call


def _takes_keyword(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature (a builtin)
        return False


def _shapes(tree: Any) -> tuple:
    return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


def _snapshot_samples(sample_fn, state: TrainState, step: int, workdir: str,
                      writer: MetricWriter) -> None:
    samples = distributed.to_host(sample_fn(state.ema_params,
                                            stream_key(state.rng, SAMPLE_STREAM, step)))
    path = os.path.join(workdir, "samples", f"iter_{step}", "grid.png")
    if distributed.is_main_process():
        save_samples(samples, path)
        if samples.ndim == 4:
            writer.write_images(step, {"samples": samples})
        log.info("Step %d: samples written to %s", step, path)
