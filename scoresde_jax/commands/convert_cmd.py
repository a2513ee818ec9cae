"""The ``convert`` job: an official score_sde checkpoint as an Orbax checkpoint in a workdir."""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax import convert as convert_lib
from scoresde_jax.training import Checkpointer, distributed, has_checkpoints
from scoresde_jax.training.checkpoint import CHECKSUM_DIR, PREEMPTION_DIR, SNAPSHOT_DIR

log = logging.getLogger("scoresde_jax.commands")


def convert(config: Any, checkpoint: str, workdir: str, *, model: Any = None,
            overwrite: bool = False) -> dict:
    """An official score_sde checkpoint as an Orbax checkpoint of this library under ``workdir``.

    ``params`` / ``ema_params`` come from the official ``optimizer.target`` / ``params_ema``, the
    step is the official one; the optimizer state starts fresh (the official Adam moments are not
    carried over). A workdir that already has checkpoints is refused unless ``overwrite`` (then
    its checkpoints are replaced).
    """
    if has_checkpoints(workdir):
        if not overwrite:
            raise ValueError(
                f"Workdir {os.path.abspath(workdir)} already has checkpoints; sample/eval would keep "
                "using them. Convert into a fresh --workdir, or pass --overwrite to replace them.")
    s = config_lib.setup(config, model=model)
    official = convert_lib.read_official_checkpoint(checkpoint)
    ema = convert_lib.load_official_checkpoint(checkpoint, config, ema=True)
    raw = convert_lib.load_official_checkpoint(checkpoint, config, ema=False)
    params = distributed.put_replicated(raw, s.mesh)
    state = s.init_state().replace(
        step=distributed.put_replicated(np.int32(official.step), s.mesh),
        params=params,
        ema_params=distributed.put_replicated(ema, s.mesh),
        opt_state=jax.jit(s.tx.init, out_shardings=distributed.replicated(s.mesh))(params),
    )
    if overwrite:  # only now that the official checkpoint loaded
        for sub in (SNAPSHOT_DIR, PREEMPTION_DIR, CHECKSUM_DIR):
            shutil.rmtree(os.path.join(os.path.abspath(workdir), sub), ignore_errors=True)
    with Checkpointer(workdir, async_save=False) as ckpt:
        path = ckpt.save(int(official.step), state, {})
    log.info("Converted %s (step %d) into %s", official.path, official.step, path)
    return {"step": int(official.step), "checkpoint": path, "source": str(official.path)}
