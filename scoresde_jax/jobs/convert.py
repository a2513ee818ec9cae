"""``scoresde convert``: an official score_sde checkpoint as an Orbax checkpoint in a workdir that
``sample``, ``eval`` and ``likelihood`` use like a trained one.

``params`` / ``ema_params`` come from the official ``optimizer.target`` / ``params_ema``, the step
is the official one; the optimizer state starts fresh (the official Adam moments are not carried
over). A workdir that already has checkpoints is refused unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from typing import Any, NamedTuple

import jax
import numpy as np

from scoresde_jax.jobs import common
from scoresde_jax.pretrained import score_sde
from scoresde_jax.training import Checkpointer, distributed, has_checkpoints
from scoresde_jax.training.checkpoint import CHECKSUM_DIR, PREEMPTION_DIR, SNAPSHOT_DIR

log = logging.getLogger("scoresde_jax.jobs")


class ConvertOptions(NamedTuple):
    """The options of :func:`convert`."""

    checkpoint: str  # a checkpoint_<step> file, or a folder of them (the newest)
    overwrite: bool = False


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_workdir(p, config_required=True,
                       help="workdir to write the Orbax checkpoint into (the config: the one the "
                       "checkpoint was trained with, e.g. configs/ve/cifar10_ncsnpp_continuous.py)")
    p.add_argument("--checkpoint", required=True, help="official score_sde checkpoint file")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints of a workdir that already has some")


def convert(setup: Any, options: ConvertOptions, workdir: str) -> dict:
    """Read ``options.checkpoint`` once, map it onto ``setup``'s model and save it as step
    ``official step`` under ``workdir``. Returns ``{'step', 'checkpoint', 'source'}``."""
    s = setup
    if has_checkpoints(workdir) and not options.overwrite:
        raise ValueError(
            f"Workdir {os.path.abspath(workdir)} already has checkpoints; sample/eval would keep "
            "using them. Convert into a fresh --workdir, or pass --overwrite to replace them.")
    official = score_sde.load_checkpoint(
        options.checkpoint, s.abstract_state().params,
        model_desc=score_sde.describe_model(s.model, s.input_shape[1:]))
    raw, ema = official.weights(ema=False), official.weights(ema=True)
    params = distributed.put_replicated(raw, s.mesh)
    state = s.init_state().replace(
        step=distributed.put_replicated(np.int32(official.step), s.mesh),
        params=params,
        ema_params=distributed.put_replicated(ema, s.mesh),
        opt_state=jax.jit(s.tx.init, out_shardings=distributed.replicated(s.mesh))(params),
    )
    if options.overwrite:  # only now that the official checkpoint loaded
        for sub in (SNAPSHOT_DIR, PREEMPTION_DIR, CHECKSUM_DIR):
            shutil.rmtree(os.path.join(os.path.abspath(workdir), sub), ignore_errors=True)
    with Checkpointer(workdir, async_save=False) as ckpt:
        path = ckpt.save(int(official.step), state, {})
    log.info("Converted %s (step %d) into %s", official.path, official.step, path)
    return {"step": int(official.step), "checkpoint": path, "source": str(official.path)}
