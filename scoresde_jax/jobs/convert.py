"""``scoresde convert --from edm|diffusers|score_sde SRC --workdir DIR``: a pretrained model as a
workdir that ``sample``, ``eval`` and ``likelihood`` use like a trained one.

* ``score_sde`` (``--config`` the checkpoint was trained with): ``params`` / ``ema_params`` from
  the official ``optimizer.target`` / ``params_ema``, the official step;
* ``edm`` / ``diffusers``: the network and SDE of the file (:mod:`scoresde_jax.pretrained`);
  ``params = ema_params`` = its weights, step 0. The config describing it is built from the file
  at the config boundary (``Pretrained.config``).

The optimizer state starts fresh. ``<workdir>/config.json`` records the config. A workdir that
already has checkpoints is refused unless ``--overwrite``.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, NamedTuple, Optional

import jax
import numpy as np

from scoresde_jax.jobs.arguments import SOURCE_FORMATS
from scoresde_jax.training import Checkpointer, distributed, has_checkpoints
from scoresde_jax.training.checkpoint import CHECKSUM_DIR, PREEMPTION_DIR, SNAPSHOT_DIR
from scoresde_jax.training.workdir import save_config

log = logging.getLogger("scoresde_jax.jobs")


class ConvertOptions(NamedTuple):
    """The options of :func:`convert`.

    ``source``: the official ``checkpoint_<step>`` file or folder (``score_sde``), the EDM pickle
    or the diffusers folder; ``params`` / ``ema_params`` / ``step``: its weights and step, read
    once at the boundary (:func:`scoresde_jax.config.convert_options`); ``record``: the config
    saved as ``config.json``."""

    source: str
    source_format: str = "score_sde"
    overwrite: bool = False
    params: Any = None
    ema_params: Any = None
    step: int = 0
    record: Optional[dict] = None


def check_target(workdir: str, overwrite: bool) -> None:
    """A workdir that already has checkpoints is refused unless ``overwrite`` (checked before the
    source is read)."""
    if has_checkpoints(workdir) and not overwrite:
        raise ValueError(
            f"Workdir {os.path.abspath(workdir)} already has checkpoints; sample/eval would keep "
            "using them. Convert into a fresh --workdir, or pass --overwrite to replace them.")


def convert(setup: Any, options: ConvertOptions, workdir: str) -> dict:
    """Write ``options.source`` as a checkpoint of ``setup``'s model under ``workdir``.
    Returns ``{'step', 'checkpoint', 'source', 'format'}``."""
    s = setup
    if options.source_format not in SOURCE_FORMATS:
        raise ValueError(f"--from {options.source_format!r}: one of {SOURCE_FORMATS}")
    check_target(workdir, options.overwrite)
    if options.params is None:
        raise ValueError("the weights were not read; build the options with "
                         "scoresde_jax.config.convert_options(config, setup, source=...)")
    raw = options.params
    ema = options.ema_params if options.ema_params is not None else raw
    step, source = int(options.step), str(options.source)
    params = distributed.put_replicated(raw, s.mesh)
    state = s.init_state().replace(
        step=distributed.put_replicated(np.int32(step), s.mesh),
        params=params,
        ema_params=distributed.put_replicated(ema, s.mesh),
        opt_state=jax.jit(s.tx.init, out_shardings=distributed.replicated(s.mesh))(params),
    )
    if options.overwrite:  # only now that the source loaded
        for sub in (SNAPSHOT_DIR, PREEMPTION_DIR, CHECKSUM_DIR):
            shutil.rmtree(os.path.join(os.path.abspath(workdir), sub), ignore_errors=True)
    with Checkpointer(workdir, async_save=False) as ckpt:
        path = ckpt.save(step, state, {})
    if options.record is not None and distributed.is_main_process():
        save_config(workdir, options.record)
    log.info("Converted %s (%s, step %d) into %s", source, options.source_format, step, path)
    return {"step": step, "checkpoint": path, "source": source, "format": options.source_format}
