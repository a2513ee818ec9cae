"""The host side of the training loop: the data-prefetch thread and the stop signals.

* :class:`Prefetcher` reads, scales and places on the mesh the batches of the next ``PREFETCH``
  dispatches in a background thread while the device computes, and knows the data iterator's
  position of the batches handed out (what a checkpoint stores).
* :class:`StopRequest` records SIGTERM / SIGINT and lets all processes agree on the step to stop
  at (through the ``jax.distributed`` coordination service: host messages, no device sync).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import threading
from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax._src import distributed as jax_distributed  # the coordination-service client (as Orbax)
from jax.experimental import multihost_utils

log = logging.getLogger("scoresde_jax.training")


# Dispatches whose batches wait, on the mesh, in the prefetch queue; the thread reads one more.
PREFETCH = 2


class Preempted(Exception):
    """Training stopped by SIGTERM/SIGINT after saving a preemption checkpoint at ``step``."""

    def __init__(self, signum: int, step: int, workdir: str):
        self.signum, self.step, self.workdir = signum, step, workdir
        self.exit_code = 0 if signum == signal.SIGTERM else 128 + int(signum)
        super().__init__(f"{signal.Signals(signum).name}: saved a preemption checkpoint at step "
                         f"{step} under {workdir}; run the same command again to resume.")


# How long a process waits for the others at the per-dispatch agreement on a stop signal (the
# first dispatch includes their compilation).
AGREE_TIMEOUT_MS = 3_600_000


def _coordination_client():
    """The ``jax.distributed`` coordination-service client, or None (Orbax uses the same one)."""
    state = getattr(jax_distributed, "global_state", None)
    return getattr(state, "client", None)


class StopRequest:
    """SIGTERM/SIGINT handlers that only record the signal (installed around the loop)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    _runs = 0  # loops started in this process: the same count on every process of a run

    def __init__(self):
        self.signum: int | None = None
        StopRequest._runs += 1
        self.run = StopRequest._runs
        self._last_key: str | None = None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self.signum = signum
        log.warning("Received %s: finishing the current step, then saving a preemption "
                    "checkpoint.", signal.Signals(signum).name)

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers can only be set in the main thread
            return
        previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def agreed(self, step: int) -> int | None:
        """The signal, agreed by all processes after the dispatch that ends at ``step`` (the
        largest signal number any of them got).

        Several processes agree through the coordination service of ``jax.distributed`` (its
        key-value store and a barrier): host messages only, so the device keeps computing the
        queued steps. (A device all-gather would wait for them: a pipeline drain per step.)
        """
        if jax.process_count() == 1:
            return self.signum
        client = _coordination_client()
        if client is None:  # not started by jax.distributed.initialize: a device collective
            got = multihost_utils.process_allgather(np.int32(self.signum or 0))
            return int(np.max(got)) or None
        prefix = f"scoresde_jax/stop/{self.run}/{step}"
        client.key_value_set(f"{prefix}/{jax.process_index()}", str(self.signum or 0))
        client.wait_at_barrier(prefix, AGREE_TIMEOUT_MS)
        best = max(int(v) for _, v in client.key_value_dir_get(prefix + "/"))
        if self._last_key is not None:
            client.key_value_delete(self._last_key)  # everyone has read it (the barrier above)
        self._last_key = f"{prefix}/{jax.process_index()}"
        return best or None


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


def image_batch(batch: Any) -> np.ndarray:
    return np.asarray(batch["image"] if isinstance(batch, dict) else batch)


def with_labels(images: np.ndarray, batches: list, *, stacked: bool = True) -> Any:
    """``{'image', 'label'}`` when the data batches carry labels (class-conditional models and
    classifiers read them; the score losses accept both), else the images."""
    if not all(isinstance(b, dict) and "label" in b for b in batches):
        return images
    labels = [np.asarray(b["label"]) for b in batches]
    return {"image": images, "label": np.stack(labels) if stacked else labels[0]}


def chunk_sizes(step: int, end: int, n_jitted_steps: int) -> Iterator[int]:
    """Steps per dispatch from ``step`` to ``end``: dispatches end on multiples of
    ``n_jitted_steps``, so the first after resuming from an early stop and the last before
    ``n_iters`` (1300001 in the paper's configs) may be shorter (one more compile each)."""
    while step < end:
        k = min(n_jitted_steps - step % n_jitted_steps, end - step)
        yield k
        step += k


class Prefetcher:
    """The batches of the coming dispatches, read from ``it``, made by ``make(raw_batches)`` (scale,
    stack, place on the mesh) in a background thread, at most ``depth`` dispatches ahead.

    Host work (the data pipeline, the scaler, the host-to-device copy) thus overlaps the device's
    step instead of adding to it. :attr:`position` is the iterator's state after the batches handed
    out so far (what a checkpoint must store); :meth:`close` stops the thread and moves the iterator
    back to that position. An exception of the thread (the data ran out, a wrong batch size) is
    raised by :meth:`get` in the loop's thread.
    """

    def __init__(self, it: Iterator, sizes: Iterator[int], make: Callable[[list], Any],
                 depth: int = PREFETCH):
        self._it, self._sizes, self._make = it, sizes, make
        self.position = iterator_state(it)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scoresde-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for k in self._sizes:
                if self._stop.is_set():
                    return
                raw = [next(self._it) for _ in range(k)]
                if not self._put((k, self._make(raw), iterator_state(self._it))):
                    return
        except BaseException as e:  # noqa: BLE001 -- handed to the loop's thread
            self._put((None, e, None))

    def get(self) -> tuple[int, Any]:
        """``(steps, batches)`` of the next dispatch (waits for the thread when it is behind)."""
        k, batch, position = self._queue.get()
        if k is None:
            raise batch
        self.position = position
        return k, batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60.0)  # it may be inside a slow read; a stuck one is left
        if (not self._thread.is_alive() and self.position is not None
                and callable(getattr(self._it, "set_state", None))
                and iterator_state(self._it) != self.position):
            self._it.set_state(self.position)  # un-read the prefetched batches
