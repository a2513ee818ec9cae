"""A CPU laid out as an accelerator host, and the per-core accounting of ``bench_loop``'s pinned rows.

:func:`pin_device_core` puts XLA's threads on one core (the "device") and every host thread on the
others; :func:`device_sched_s` reads the device core's XLA run time and idle time from the kernel
(``/proc/self/task/*/schedstat``, ``/proc/stat``); :func:`device_fractions` turns two readings into
busy / idle / outside shares of a wall-clock window. Linux only.
"""

from __future__ import annotations

import os
import pathlib

import jax
import numpy as np


def device_fractions(before, after, wall: float, core: int | None) -> dict:
    """Shares of ``wall`` in which the device core ran XLA's threads (busy), ran nothing (idle: XLA
    had no work, the host fell behind) or ran something else (outside: other processes, the
    kernel), from two :func:`device_sched_s` readings; ``{}`` when not pinned."""
    if core is None:
        return {}
    busy, idle = ((b - a) / wall for a, b in zip(before, after))
    return {"device_busy": busy, "device_idle": idle,
            "device_outside": max(0.0, 1.0 - busy - idle)}


def pin_device_core() -> tuple[int, list[int]]:
    """Lay out this process as an accelerator host on a multi-core CPU: XLA's threads on the first
    core (the "device"), this thread and every thread started later (the loop's prefetch thread,
    Orbax, Grain, the progress bar) on the others. Call before the first JAX computation; Linux only.
    Returns ``(device core, host cores)``."""
    from jax._src import xla_bridge  # noqa: PLC0415 -- only to check that no backend exists yet

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit(f"--pin needs at least 2 cores; this process may use {cores}.")
    if xla_bridge._backends:  # noqa: SLF001
        raise RuntimeError("pin_device_core() must run before JAX starts its backend.")
    os.sched_setaffinity(0, {cores[0]})  # pid 0: this thread; XLA's pools inherit the mask
    jax.block_until_ready(jax.jit(lambda x: x + 1)(np.ones(4)))  # backend + execution threads
    os.sched_setaffinity(0, set(cores[1:]))
    return cores[0], cores[1:]


def device_sched_s(core: int | None) -> tuple[float, float]:
    """``(run, idle)`` seconds so far on ``core``: the run time of this process's threads bound to
    it alone (XLA's, when pinned; per-thread ``schedstat``) and the core's idle time (``/proc/stat``,
    idle + iowait)."""
    if core is None:
        return 0.0, 0.0
    run = 0
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            if os.sched_getaffinity(int(task.name)) != {core}:
                continue
            run += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    for line in pathlib.Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            idle = sum(int(v) for v in line.split()[4:6]) / os.sysconf("SC_CLK_TCK")
            break
    else:
        idle = 0.0
    return run / 1e9, idle


def process_cpu_s() -> float:
    t = os.times()
    return t.user + t.system  # every thread's, the ended ones included
