"""Workdir hygiene: one run per workdir (a lock file), the run's resolved config saved as
``config.json``, and ``metrics.jsonl`` without rows replayed after a restart.

``<workdir>/.lock``        ``{"pid", "host", "started"}`` of the process that trains there; a second
                           run exits at once naming the holder; a lock left by a dead process on
                           this host is taken over with a warning.
``<workdir>/config.json``  the resolved config and the command line, written when training starts;
                           ``sample`` / ``eval`` / ``likelihood`` read it when ``--config`` is omitted.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any

log = logging.getLogger("scoresde_jax.training")

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"


class WorkdirBusyError(RuntimeError):
    """Another live process trains in this workdir."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """An exclusive lock on a workdir (``O_CREAT | O_EXCL`` of ``<workdir>/.lock``).

    ``acquire()`` raises :class:`WorkdirBusyError` naming the holder's pid and host when a live
    process holds it; a lock of a dead pid on this host is taken over (logged as a warning). A
    lock held on another host cannot be checked: it is reported, and removing the file by hand
    is the fix once that run is known to be gone.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), LOCK_FILE)
        self.held = False

    def _holder(self) -> dict:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "WorkdirLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                h = self._holder()
                if not h:  # being written by a process that started at the same moment
                    time.sleep(0.2)
                    h = self._holder()
                pid, host = h.get("pid"), h.get("host")
                if (isinstance(pid, int) and host == me["host"] and not _alive(pid)) or (
                        not h and os.path.exists(self.path)
                        and time.time() - os.path.getmtime(self.path) > 10):
                    log.warning("Taking over the stale lock %s of process %s on %s (no longer "
                                "running).", self.path, pid, host)
                    try:
                        os.remove(self.path)
                    except FileNotFoundError:
                        pass
                    continue
                raise WorkdirBusyError(
                    f"Workdir {os.path.dirname(self.path)} is in use by process {pid} on host "
                    f"{host} (lock file {self.path}). Wait for that run to end, stop it, or use "
                    "another --workdir; if that process is gone, remove the lock file.") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise WorkdirBusyError(f"Could not take the lock {self.path}; another run keeps taking it.")

    def release(self) -> None:
        if self.held:
            if self._holder().get("pid") == os.getpid():
                try:
                    os.remove(self.path)
                except FileNotFoundError:
                    pass
            self.held = False

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def jsonable(value: Any) -> Any:
    """``value`` (a ConfigDict, dicts, sequences, numpy scalars) as plain JSON values."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return value.item()  # numpy scalars
    except AttributeError:
        return repr(value)


def save_config(workdir: str, config: Any, argv: list[str] | None = None) -> str:
    """Write the resolved config and the command line to ``<workdir>/config.json`` (atomically)."""
    path = os.path.join(os.path.abspath(workdir), CONFIG_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"config": jsonable(config), "argv": list(sys.argv if argv is None else argv),
              "time": time.time()}
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def read_config(workdir: str) -> dict | None:
    """The config dict saved in ``<workdir>/config.json``, or None when there is none."""
    path = os.path.join(os.path.abspath(workdir), CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)["config"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path} is damaged ({e}); pass --config explicitly.") from None


def drop_replayed_metrics(workdir: str, step: int) -> int:
    """Remove ``metrics.jsonl`` rows with a step after ``step`` (the checkpoint a run resumes
    from): those steps are trained again and logged again. Returns the number dropped."""
    path = os.path.join(os.path.abspath(workdir), "metrics.jsonl")
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = [ln for ln in f if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if int(json.loads(ln).get("step", 0)) <= step:
                keep.append(ln)
        except (ValueError, AttributeError):
            continue  # a line torn by a kill mid-write
    if len(keep) != len(lines):
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(ln if ln.endswith("\n") else ln + "\n" for ln in keep)
        os.replace(tmp, path)
    return len(lines) - len(keep)
