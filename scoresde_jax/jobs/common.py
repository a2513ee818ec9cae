"""What the jobs share: the command-line arguments several jobs take, and the results file.

Each job module declares its own arguments (``add_arguments(parser)``) with the helpers here;
:mod:`scoresde_jax.cli` assembles the parser from them, so a job accepts only its own flags.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from scoresde_jax.training import distributed


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
    p.add_argument("--method", default=None,
                   help="sampler (a key of samplers.SAMPLERS; default config.sampling.method)")
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
    p.add_argument("--preprocess", default=None,
                   help="score_sde (default), torch_fidelity or pytorch_fid")


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
