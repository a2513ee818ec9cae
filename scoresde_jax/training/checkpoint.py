"""Checkpoints with Orbax ``CheckpointManager`` (score_sde's layout, Orbax's format; never pickle).

``<workdir>/checkpoints``       periodic snapshots every ``training.snapshot_freq`` steps, keep the last k
                                (``training.keep_checkpoints``, default all).
``<workdir>/checkpoints-meta``  the preemption checkpoint every ``training.snapshot_freq_for_preemption``
                                steps, only the latest kept.

Each checkpoint is a Composite of ``state`` (the :class:`~scoresde_jax.training.state.TrainState` pytree)
and ``data`` (the data iterator's JSON state), so a resumed run continues with the same parameters,
the same RNG (``fold_in(rng, step)``) and the same data order. Orbax writes into a temporary directory
and renames it when complete, so a process killed mid-save leaves the previous checkpoint intact.

Integrity: before each save the SHA-256 of every array of the state is recorded in
``<workdir>/checkpoints-checksums/<dir>_<step>.json`` (and the parameters and EMA parameters are
checked finite: a non-finite state is never saved, :class:`NonFiniteStateError`). A step is complete
once Orbax committed it; a restore verifies the checksums. A damaged or incomplete step (truncated
or missing files, an empty folder, flipped bytes) is reported by name and the newest good step is
used instead; ``restore(step=N)`` picks one explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from scoresde_jax.training import distributed

SNAPSHOT_DIR = "checkpoints"
PREEMPTION_DIR = "checkpoints-meta"
CHECKSUM_DIR = "checkpoints-checksums"
DAMAGED_DIR = "checkpoints-damaged"

log = logging.getLogger("scoresde_jax.training")


class NonFiniteStateError(ValueError):
    """The parameters or EMA parameters hold NaN/inf; such a state is never saved."""


class CheckpointError(ValueError):
    """No usable checkpoint: every step is damaged, or the requested step is missing/damaged."""


class Restored(NamedTuple):
    step: int
    state: Any
    data_state: Any
    directory: str


def _abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (keeping shardings) for an abstract or concrete pytree."""

    def f(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype if sharding is None else x.dtype,
                                    sharding=sharding)

    return jax.tree.map(f, tree)


def _path(keys) -> str:
    """``a/b/0`` for a key path, whether it went through attributes, dict keys or sequence indices."""
    parts = []
    for k in keys:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def _shape_mismatches(saved_meta: Any, abstract_state: Any) -> list[str]:
    """Leaves whose saved shape differs from the expected one (``path: saved vs expected``)."""
    expected = {_path(k): v for k, v in jax.tree_util.tree_leaves_with_path(abstract_state)}
    saved = {
        _path(k): v
        for k, v in jax.tree_util.tree_leaves_with_path(saved_meta)
        if hasattr(v, "shape")
    }
    problems = []
    for key in sorted(set(expected) | set(saved)):
        if key not in saved:
            problems.append(f"{key}: missing in checkpoint")
        elif key not in expected:
            problems.append(f"{key}: not in the model")
        elif tuple(saved[key].shape) != tuple(expected[key].shape):
            problems.append(f"{key}: checkpoint {tuple(saved[key].shape)} vs model {tuple(expected[key].shape)}")
    return problems


def checksums(host_tree: Any) -> dict[str, str]:
    """``{leaf path: sha256 of dtype, shape and bytes}`` of a pytree of host arrays."""
    out = {}
    for k, v in jax.tree_util.tree_leaves_with_path(host_tree):
        a = np.ascontiguousarray(np.asarray(v))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
        out[_path(k)] = h.hexdigest()
    return out


def tree_digest(tree: Any) -> str:
    """A short sha256 digest of a pytree's arrays (names, dtypes, shapes and bytes): what a job's
    record names a checkpoint's parameters by."""
    h = hashlib.sha256()
    for name, digest in sorted(checksums(distributed.to_host(tree)).items()):
        h.update(f"{name}:{digest};".encode())
    return h.hexdigest()[:16]


def nonfinite_leaves(state: Any) -> list[str]:
    """Paths of the ``params`` / ``ema_params`` leaves of a state that hold NaN or inf."""
    bad = []
    for name in ("params", "ema_params"):
        tree = getattr(state, name, None)
        for k, v in jax.tree_util.tree_leaves_with_path(tree):
            a = np.asarray(v)
            if a.dtype.kind in "fc" and not np.isfinite(a).all():
                bad.append(f"{name}/{_path(k)}")
    return bad


def _short(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg[:200]}{'...' if len(msg) > 200 else ''}"


class Checkpointer:
    """Two Orbax managers: periodic snapshots (keep-last-k) and one preemption checkpoint."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = None, async_save: bool = True,
                 read_only: bool = False):
        self.workdir = os.path.abspath(workdir)
        self.read_only = read_only
        opts = dict(create=not read_only, enable_async_checkpointing=async_save,
                    read_only=read_only)

        def manager(sub: str, keep: int | None) -> ocp.CheckpointManager:
            return ocp.CheckpointManager(
                os.path.join(self.workdir, sub),
                item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts),
            )

        self.snapshots = manager(SNAPSHOT_DIR, max_to_keep or None)
        self.preemption = manager(PREEMPTION_DIR, 1)

    def _sum_path(self, mgr: ocp.CheckpointManager, step: int) -> str:
        return os.path.join(self.workdir, CHECKSUM_DIR, f"{os.path.basename(str(mgr.directory))}_{step}.json")

    def save(self, step: int, state: Any, data_state: Any = None, *, preemption: bool = False) -> str:
        """Save (asynchronously) into the snapshot or the preemption manager; returns the directory.

        Raises :class:`NonFiniteStateError` (nothing written) when params or EMA params hold
        NaN/inf. The checksums are written before Orbax starts, so every committed step has them.
        """
        mgr = self.preemption if preemption else self.snapshots
        if mgr.latest_step() == step:
            return str(mgr.directory)
        host = distributed.to_host(state)
        bad = nonfinite_leaves(host)
        if bad:
            raise NonFiniteStateError(
                f"The state of step {step} has non-finite values in {len(bad)} leaves (e.g. "
                f"{bad[:3]}); it was not saved.")
        if step in mgr.all_steps():  # a damaged step of that number was set aside on restore
            mgr.reload()
        if distributed.is_main_process():
            path = self._sum_path(mgr, int(step))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump({"step": int(step), "sha256": checksums(host)}, f)
            os.replace(path + ".tmp", path)
        items = {"state": ocp.args.StandardSave(state)}
        items["data"] = ocp.args.JsonSave(data_state if data_state is not None else {})
        mgr.save(int(step), args=ocp.args.Composite(**items), force=True)
        return str(mgr.directory)

    def latest_step(self) -> int | None:
        steps = [s for s in (self.snapshots.latest_step(), self.preemption.latest_step()) if s is not None]
        return max(steps) if steps else None

    def steps(self) -> list[tuple[int, ocp.CheckpointManager]]:
        """Every committed ``(step, manager)``, newest first (the preemption one first on a tie)."""
        out = [(int(s), m) for m in (self.preemption, self.snapshots) for s in m.all_steps()]
        return sorted(out, key=lambda c: -c[0])

    def _check_shapes(self, mgr, step: int, abstract_state: Any) -> None:
        try:
            meta = mgr.item_metadata(step)
            saved = meta["state"] if meta is not None and "state" in meta else None
        except Exception:  # unreadable metadata: the restore below reports the damage
            saved = None
        if saved is not None:
            problems = _shape_mismatches(saved, abstract_state)
            if problems:
                raise ValueError(
                    f"Checkpoint {mgr.directory}/{step} does not match this model/optimizer config "
                    f"({len(problems)} differing leaves, e.g. {problems[:3]}). Use the config it was trained "
                    "with, or a fresh --workdir."
                )

    def _restore_one(self, mgr, step: int, abstract_state: Any) -> Restored:
        """Restore and verify one step; raises CheckpointError naming the damage."""
        where = f"{mgr.directory}/{step}"
        try:
            restored = mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
        except Exception as e:  # TensorStore / OCDBT / JSON errors of damaged files
            raise CheckpointError(f"{where} is damaged or incomplete ({_short(e)})") from e
        sum_path = self._sum_path(mgr, step)
        if os.path.isfile(sum_path):
            try:
                with open(sum_path) as f:
                    expected = json.load(f)["sha256"]
            except (OSError, ValueError, KeyError) as e:
                raise CheckpointError(f"{where}: its checksum file {sum_path} is damaged ({e})") from e
            got = checksums(distributed.to_host(restored["state"]))
            differ = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
            if differ:
                raise CheckpointError(
                    f"{where} is damaged: the checksums of {len(differ)} arrays differ from those "
                    f"recorded when it was saved (e.g. {differ[:3]})")
        else:  # every save writes its checksums before Orbax starts: a missing file is damage
            raise CheckpointError(f"{where} has no checksum file {sum_path}: it was written "
                                  "before being verified, or the file was lost")
        return Restored(int(step), restored["state"], restored["data"] or None, str(mgr.directory))

    def _set_aside(self, mgr, step: int) -> None:
        """Move a damaged step out of the manager's directory (kept for inspection)."""
        if self.read_only or not distributed.is_main_process():
            return
        src = os.path.join(str(mgr.directory), str(step))
        dst = os.path.join(self.workdir, DAMAGED_DIR,
                           f"{os.path.basename(str(mgr.directory))}_{step}_{int(time.time())}")
        if os.path.isdir(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.move(src, dst)
            log.warning("Moved the damaged %s to %s.", src, dst)
        mgr.reload()

    def restore(self, abstract_state: Any, *, step: int | None = None,
                set_aside: bool = False) -> Restored | None:
        """Restore the newest good checkpoint of either manager (or ``step``) into
        ``abstract_state``'s structure and shardings.

        Returns None when there is no checkpoint. A damaged newest step is reported (a warning
        naming it) and the next older one is tried; ``set_aside`` moves damaged steps to
        ``checkpoints-damaged/`` (training, so the step can be written again). Raises
        :class:`CheckpointError` when no step is usable or ``step`` is missing or damaged, and
        ValueError naming the mismatching leaves when the checkpoint was written by a
        different model or optimizer configuration.
        """
        candidates = self.steps()
        if step is not None:
            chosen = [c for c in candidates if c[0] == int(step)]
            if not chosen:
                raise CheckpointError(
                    f"No checkpoint of step {step} under {self.workdir}; available steps: "
                    f"{sorted({c[0] for c in candidates}) or 'none'}.")
            candidates = chosen[:1]
        if not candidates:
            return None
        abstract_state = _abstract(abstract_state)
        problems = []
        for s, mgr in candidates:
            self._check_shapes(mgr, s, abstract_state)
            try:
                r = self._restore_one(mgr, s, abstract_state)
            except CheckpointError as e:
                problems.append(str(e))
                log.warning("%s", e)
                if set_aside:
                    self._set_aside(mgr, s)
                if step is not None:
                    raise CheckpointError(f"{e}. Pick another step with --checkpoint N.") from e
                continue
            if problems:
                log.warning("Using the newest good checkpoint, step %d (%s), instead of the "
                            "damaged newer one(s).", r.step, r.directory)
            return r
        raise CheckpointError(
            f"Every checkpoint under {self.workdir} is damaged: {'; '.join(problems)}. Restore them "
            "from a backup, or start with a fresh --workdir.")

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """:meth:`restore` of the newest good step (kept for callers of the earlier API)."""
        return self.restore(abstract_state)

    def wait(self) -> None:
        self.snapshots.wait_until_finished()
        self.preemption.wait_until_finished()

    def close(self) -> None:
        self.snapshots.close()
        self.preemption.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def has_checkpoints(workdir: str) -> bool:
    """Whether ``workdir`` holds any step folder of either manager."""
    for sub in (SNAPSHOT_DIR, PREEMPTION_DIR):
        d = os.path.join(os.path.abspath(workdir), sub)
        if os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d)):
            return True
    return False


def restore_params(workdir: str, abstract_state: Any, *, ema: bool = True,
                   step: int | None = None) -> tuple[Any, int]:
    """(EMA) parameters of a training run's newest good checkpoint (or of ``step``), for
    sampling and evaluation."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"Workdir {os.path.abspath(workdir)} does not exist; pass the "
                                "--workdir of a training run.")
    with Checkpointer(workdir, async_save=False, read_only=True) as ckpt:
        r = ckpt.restore(abstract_state, step=step)
    if r is None:
        raise FileNotFoundError(
            f"No checkpoint under {os.path.abspath(workdir)}/{{{SNAPSHOT_DIR},{PREEMPTION_DIR}}}; "
            "train first with `scoresde train --workdir ...`."
        )
    params = r.state.ema_params if ema else r.state.params
    bad = nonfinite_leaves(r.state.replace(params=params, ema_params=params))
    if bad:
        raise NonFiniteStateError(
            f"Checkpoint step {r.step} under {workdir} has non-finite parameters ({bad[:3]}); pick "
            "an earlier step with --checkpoint N.")
    return params, r.step
