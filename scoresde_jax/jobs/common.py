"""What the jobs share: the command-line arguments several jobs take, and the results file.

Each job module declares its own arguments (``add_arguments(parser)``) with the helpers here;
:mod:`scoresde_jax.cli` assembles the parser from them, so a job accepts only its own flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

import numpy as np

from scoresde_jax import __version__, samplers
from scoresde_jax.evaluation.inception import PREPROCESS_MODES
from scoresde_jax.training import distributed
from scoresde_jax.training.checkpoint import tree_digest
from scoresde_jax.training.workdir import jsonable


def add_config(p: argparse.ArgumentParser, *, required: bool = True, what: str = "") -> None:
    """``--config`` (required, or defaulting to the workdir's config.json)."""
    p.add_argument("--config", required=required,
                   help=f"config file (ml_collections, get_config()){what}; override any key "
                   "with --config.section.key=VALUE"
                   + ("" if required else "; default: the workdir's config.json"))


def add_workdir(p: argparse.ArgumentParser, *, config_required: bool, help: str) -> None:
    """``--config`` (:func:`add_config`) and ``--workdir``."""
    add_config(p, required=config_required)
    p.add_argument("--workdir", required=True, help=help)


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=int, default=None,
                   help="checkpoint step (default: the newest good one)")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no_progress", action="store_true", help="no progress bar")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data_dir", default=None,
                   help="TFDS data dir (not needed for the embedded data)")


def add_sampler(p: argparse.ArgumentParser) -> None:
    """``--method`` / ``--nfe``: the sampler and its budget."""
    p.add_argument("--method", default=None, choices=sorted(samplers.SAMPLERS),
                   help="sampler (default config.sampling.method)")
    p.add_argument("--nfe", type=int, default=None,
                   help="budget of score evaluations (the method picks its steps)")


def add_conditioning(p: argparse.ArgumentParser) -> None:
    """``--class`` / ``--guidance`` / ``--classifier`` / ``--classifier_scale``."""
    p.add_argument("--class", dest="classes", default=None,
                   help="class-conditional model: the class(es) to sample, e.g. 3 or 0,1,2 "
                   "(cycled over the samples; default all, config.eval.classes)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale w: (1 + w) s(x, t, y) - w s(x, t, null) "
                   "(default config.eval.guidance, else 0)")
    p.add_argument("--classifier", default=None,
                   help="workdir of a noise-conditional classifier: classifier guidance of the "
                   "unconditional score (instead of --guidance)")
    p.add_argument("--classifier_scale", type=float, default=None,
                   help="classifier guidance scale (default 1: Bayes' rule)")


def add_features(p: argparse.ArgumentParser) -> None:
    """``--inception`` / ``--preprocess``: the feature network of image datasets."""
    p.add_argument("--inception", dest="inception_path", default=None,
                   help="converted Inception weights (.npz of convert-inception)")
    p.add_argument("--preprocess", default=None, choices=PREPROCESS_MODES,
                   help="Inception input preprocessing (default config.eval.inception_preprocess, "
                   "else score_sde)")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="recompute the rounds of an output folder that holds another run's")


def job_record(job: str, setup: Any, options: Any, *, step: int | None, params: Any = None,
               drop: tuple[str, ...] = ()) -> dict:
    """What made a job's numbers: the job, the resolved config (``setup.record``), the checkpoint
    step and the digest of its parameters, the job's options (less ``drop`` and the ones that do
    not change a number: output place, progress bar, overwrite), the library version."""
    skip = {"out", "progress", "overwrite", "data_dir", "checkpoint", *drop}
    opts = {k: v for k, v in options._asdict().items() if k not in skip}
    return {"job": job, "config": jsonable(dict(setup.record)), "checkpoint": {
                "step": step, "digest": None if params is None else tree_digest(params)},
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
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2, default=str)
    os.replace(tmp, path)


def floats(samples: Any) -> np.ndarray:
    """uint8 images -> float32 in [0, 1]; vectors as they are."""
    x = np.asarray(samples)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x
