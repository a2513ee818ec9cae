"""What the jobs share: the record of what made a job's numbers, and the results file (its
common header, the atomic write). The command-line arguments are in
:mod:`scoresde_jax.jobs.arguments`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from scoresde_jax import __version__
from scoresde_jax.training import distributed
from scoresde_jax.training.checkpoint import tree_digest
from scoresde_jax.config_files import jsonable


def job_record(job: str, setup: Any, options: Any, *, step: int | None, params: Any = None,
               classifier_params: Any = None, drop: tuple[str, ...] = ()) -> dict:
    """What made a job's numbers: the job, the resolved config (``setup.record``), the checkpoint
    step and the digest of its parameters (and of a guiding classifier's), the job's options
    (less ``drop`` and the ones that do not change a number: output place, progress bar,
    overwrite), the library version."""
    skip = {"out", "progress", "overwrite", "data_dir", "checkpoint", *drop}
    opts = {k: v for k, v in options._asdict().items() if k not in skip}
    checkpoint = {"step": step, "digest": None if params is None else tree_digest(params)}
    if classifier_params is not None:
        checkpoint["classifier_digest"] = tree_digest(classifier_params)
    return {"job": job, "config": jsonable(dict(setup.record)), "checkpoint": checkpoint,
            "options": plain(opts), "version": __version__}


def plain(options: Any) -> Any:
    """Options as JSON values: a value with a ``record()`` (sampler, conditioning) by its record."""
    if hasattr(options, "record") and callable(options.record):
        return options.record()
    if hasattr(options, "_asdict"):
        options = options._asdict()
    elif dataclasses.is_dataclass(options) and not isinstance(options, type):
        options = dataclasses.asdict(options)
    if isinstance(options, dict):
        return {k: plain(v) for k, v in options.items()}
    return jsonable(options)


HEADER = ("job", "step", "seed", "options", "seconds", "version")


def header(job: str, *, step: int | None, seed: Any, options: Any, seconds: float) -> dict:
    """The fields every results file starts with."""
    opts = {k: v for k, v in options._asdict().items() if k not in ("progress",)}
    return {"job": job, "step": step, "seed": seed, "options": plain(opts),
            "seconds": seconds, "version": __version__}


def write_results(path: str, result: dict) -> None:
    """``result`` as JSON at ``path`` (main process only; the folder is created)."""
    if not distributed.is_main_process():
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"  # one per writer: concurrent jobs never share it
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)
    os.replace(tmp, path)


def floats(samples: Any) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; vectors as they are."""
    x = np.asarray(samples)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
