"""Workdir hygiene: one run per workdir (a lock file), the config of its checkpoints
(``config.json``) and of every start (``config_history.jsonl``), and ``metrics.jsonl`` without rows
replayed after a restart.

``<workdir>/.lock``                 ``{"pid", "host", "started"}`` of the process that trains there;
                                    a second run exits at once naming the holder; a lock left by a
                                    dead process on this host is taken over with a warning.
``<workdir>/config.json``           the resolved config and command line the checkpoints beside it
                                    were trained with: written once the first save of a start is
                                    committed (a start refused by a check, or stopped before its
                                    first save, leaves it as it was); ``sample`` / ``eval`` /
                                    ``likelihood`` read it when ``--config`` is omitted.
``<workdir>/config_history.jsonl``  one line per accepted start: ``time``, ``argv``, ``version``,
                                    ``step`` (the checkpoint step it starts from), ``changed``
                                    (``section.key: old -> new`` against the previous start),
                                    ``allowed`` (fixed keys changed under ``--allow_config_change``)
                                    and the full ``config``.

The fixed keys (:data:`FIXED_KEYS`: the model, the SDE, the data) of a workdir with checkpoints may
not change at a restart (:func:`check_config_change`); the others (the optimizer, e.g. a lower
learning rate after a NaN stop, the cadence, sampling) may, and are recorded in the history.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any, Sequence

import scoresde_jax
from scoresde_jax.config_files import jsonable

log = logging.getLogger("scoresde_jax.training")

LOCK_FILE = ".lock"
CONFIG_FILE = "config.json"
HISTORY_FILE = "config_history.jsonl"
# What a checkpoint was trained as: its network, SDE (noise scales are model keys) and data.
FIXED_KEYS = ("model", "data", "training.sde", "training.continuous")


class WorkdirBusyError(RuntimeError):
    """Another live process trains in this workdir."""


class ConfigChangeError(ValueError):
    """A restart would continue a run's checkpoints under another model, SDE or data."""


def check_workdir(workdir: Any) -> str:
    """The absolute path of a training ``workdir``, after refusing (ValueError, before anything is
    created) an empty name and a path whose first existing part is a file."""
    if workdir is None or not str(workdir).strip():
        raise ValueError("--workdir is empty; give the run's directory, e.g. --workdir runs/digits "
                         "(--workdir . for the current one).")
    path = os.path.abspath(os.path.expanduser(str(workdir)))
    part = path
    while not os.path.exists(part) and os.path.dirname(part) != part:
        part = os.path.dirname(part)
    if not os.path.isdir(part):
        raise ValueError(f"--workdir {workdir}: {part} is a file, not a directory; give a "
                         "directory for the run.")
    return path


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


def save_config(workdir: str, config: Any, argv: list[str] | None = None) -> str:
    """Write the resolved config and the command line to ``<workdir>/config.json`` (atomically);
    the training loop calls it once the first checkpoint of a start is committed."""
    path = os.path.join(os.path.abspath(workdir), CONFIG_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    record = {"config": jsonable(config), "argv": list(sys.argv if argv is None else argv),
              "time": time.time(), "version": scoresde_jax.__version__}
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


def read_config_quietly(workdir: str) -> dict | None:
    """:func:`read_config`, None for a damaged file too."""
    try:
        return read_config(workdir)
    except ValueError:
        return None


def flat_config(record: Any, prefix: str = "") -> dict[str, Any]:
    """``{'section.key': value}`` of a config (nested sections joined by dots)."""
    out: dict[str, Any] = {}
    for key, value in jsonable(record).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, name + "."))
        else:
            out[name] = value
    return out


def changed_keys(old: Any, new: Any) -> list[str]:
    """``section.key: old -> new`` for every key whose value differs (sorted; ``(unset)`` for a
    key one of them lacks)."""
    a, b = flat_config(old or {}), flat_config(new or {})

    def show(d: dict, k: str) -> str:
        return repr(d[k]) if k in d else "(unset)"

    return [f"{k}: {show(a, k)} -> {show(b, k)}" for k in sorted(set(a) | set(b))
            if k not in a or k not in b or a[k] != b[k]]


def is_fixed(key: str) -> bool:
    """Whether ``section.key`` belongs to :data:`FIXED_KEYS` (model, SDE, data)."""
    return any(key == f or key.startswith(f + ".") for f in FIXED_KEYS)


def fixed_changes(old: Any, new: Any) -> list[str]:
    """The :func:`changed_keys` of :data:`FIXED_KEYS`."""
    return [c for c in changed_keys(old, new) if is_fixed(c.split(":", 1)[0])]


def check_config_change(workdir: str, config: Any, *, trained: bool, allow: bool = False
                        ) -> list[str]:
    """Refuse (:class:`ConfigChangeError`, one line) to continue the checkpoints of ``workdir``
    (``trained``: it has some) under a config whose model, SDE or data differ from its
    ``config.json``, unless ``allow``; returns those differences (allowed ones, or [])."""
    if not trained:
        return []
    saved = read_config_quietly(workdir)
    if saved is None:  # missing or damaged: the previous start's fixed keys are the same
        history = read_history(workdir)
        saved = history[-1].get("config") if history else None
    if saved is None:
        log.warning("%s has checkpoints but no readable %s: this start's config cannot be "
                    "checked against theirs.", workdir, CONFIG_FILE)
        return []
    fixed = fixed_changes(saved, config)
    if fixed and not allow:
        raise ConfigChangeError(
            f"{os.path.abspath(workdir)} holds checkpoints of another model/SDE/data config "
            f"({CONFIG_FILE}): {'; '.join(fixed)}. Give the values it was trained with (omit those "
            "--config.* overrides), train into a new --workdir, or continue anyway with "
            "--allow_config_change (recorded in " + HISTORY_FILE + ").")
    if fixed:
        log.warning("Continuing the checkpoints of %s under another model/SDE/data config "
                    "(--allow_config_change): %s", workdir, "; ".join(fixed))
    return fixed


def read_history(workdir: str) -> list[dict]:
    """The records of ``<workdir>/config_history.jsonl``, oldest first (torn lines skipped)."""
    path = os.path.join(os.path.abspath(workdir), HISTORY_FILE)
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a kill mid-write
    return [r for r in out if isinstance(r, dict)]


def append_history(workdir: str, config: Any, *, step: int, allowed: Sequence[str] = (),
                   argv: list[str] | None = None) -> dict:
    """Append this start to ``<workdir>/config_history.jsonl``: time, command line, library
    version, the checkpoint ``step`` it starts from, ``changed`` against the previous start (its
    history line, else ``config.json``; empty for the first) and the config. Returns the record."""
    history = read_history(workdir)
    previous = history[-1].get("config") if history else read_config_quietly(workdir)
    record = {"time": time.time(), "argv": list(sys.argv if argv is None else argv),
              "version": scoresde_jax.__version__, "step": int(step),
              "changed": changed_keys(previous, config) if previous is not None else [],
              "allowed": list(allowed), "config": jsonable(config)}
    path = os.path.join(os.path.abspath(workdir), HISTORY_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    if record["changed"]:
        log.info("Config changes since the previous start (recorded in %s): %s", path,
                 "; ".join(record["changed"]))
    return record


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
