"""Checkpoints with Orbax ``CheckpointManager`` (score_sde's layout, Orbax's format; never pickle).

``<workdir>/checkpoints``       periodic snapshots every ``training.snapshot_freq`` steps, keep the last k
                                (``training.keep_checkpoints``, default all).
``<workdir>/checkpoints-meta``  the preemption checkpoint every ``training.snapshot_freq_for_preemption``
                                steps, only the latest kept.

Each checkpoint is a Composite of ``state`` (the :class:`~scoresde_jax.training.state.TrainState` pytree)
and ``data`` (the data iterator's JSON state), so a resumed run continues with the same parameters,
the same RNG (``fold_in(rng, step)``) and the same data order. Orbax writes into a temporary directory
and renames it when complete, so a process killed mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

SNAPSHOT_DIR = "checkpoints"
PREEMPTION_DIR = "checkpoints-meta"


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


class Checkpointer:
    """Two Orbax managers: periodic snapshots (keep-last-k) and one preemption checkpoint."""

    def __init__(self, workdir: str, *, max_to_keep: int | None = None, async_save: bool = True):
        self.workdir = os.path.abspath(workdir)
        opts = dict(create=True, enable_async_checkpointing=async_save)

        def manager(sub: str, keep: int | None) -> ocp.CheckpointManager:
            return ocp.CheckpointManager(
                os.path.join(self.workdir, sub),
                item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
                options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts),
            )

        self.snapshots = manager(SNAPSHOT_DIR, max_to_keep or None)
        self.preemption = manager(PREEMPTION_DIR, 1)

    def save(self, step: int, state: Any, data_state: Any = None, *, preemption: bool = False) -> str:
        """Save (asynchronously) into the snapshot or the preemption manager; returns the directory."""
        mgr = self.preemption if preemption else self.snapshots
        if mgr.latest_step() == step:
            return str(mgr.directory)
        items = {"state": ocp.args.StandardSave(state)}
        items["data"] = ocp.args.JsonSave(data_state if data_state is not None else {})
        mgr.save(int(step), args=ocp.args.Composite(**items), force=True)
        return str(mgr.directory)

    def latest_step(self) -> int | None:
        steps = [s for s in (self.snapshots.latest_step(), self.preemption.latest_step()) if s is not None]
        return max(steps) if steps else None

    def restore_latest(self, abstract_state: Any) -> Restored | None:
        """Restore the newest checkpoint of either manager into ``abstract_state``'s structure and shardings.

        Returns None when there is no checkpoint. Raises ValueError naming the mismatching leaves when the
        checkpoint was written by a different model or optimizer configuration.
        """
        candidates = [
            (mgr.latest_step(), mgr) for mgr in (self.preemption, self.snapshots) if mgr.latest_step() is not None
        ]
        if not candidates:
            return None
        step, mgr = max(candidates, key=lambda c: c[0])
        abstract_state = _abstract(abstract_state)
        try:
            meta = mgr.item_metadata(step)
            saved = meta["state"] if meta is not None and "state" in meta else None
        except Exception:  # metadata is an optimisation for the error message only
            saved = None
        if saved is not None:
            problems = _shape_mismatches(saved, abstract_state)
            if problems:
                raise ValueError(
                    f"Checkpoint {mgr.directory}/{step} does not match this model/optimizer config "
                    f"({len(problems)} differing leaves, e.g. {problems[:3]}). Use the config it was trained "
                    "with, or a fresh --workdir."
                )
        try:
            restored = mgr.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"Could not restore checkpoint {mgr.directory}/{step} into this model/optimizer config: {e}. "
                "Use the config it was trained with, or a fresh --workdir."
            ) from e
        data_state = restored["data"] or None
        return Restored(int(step), restored["state"], data_state, str(mgr.directory))

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


def restore_params(workdir: str, abstract_state: Any, *, ema: bool = True) -> tuple[Any, int]:
    """Latest (EMA) parameters of a training run, for sampling and evaluation."""
    with Checkpointer(workdir, async_save=False) as ckpt:
        r = ckpt.restore_latest(abstract_state)
    if r is None:
        raise FileNotFoundError(
            f"No checkpoint under {os.path.abspath(workdir)}/{{{SNAPSHOT_DIR},{PREEMPTION_DIR}}}; "
            "train first with `scoresde train --workdir ...`."
        )
    return (r.state.ema_params if ema else r.state.params), r.step
