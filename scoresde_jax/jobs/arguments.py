"""The command-line arguments of every job: ``ARGUMENTS[job](parser)`` declares the flags of
``scoresde <job>`` (one function per job, ``<job>_arguments``, built from the shared helpers
here), and :func:`add_process_arguments` the flags of the process that every job takes.

This module imports nothing but :mod:`argparse`, so that ``scoresde --help``, ``scoresde <job>
--help`` and a mistyped argument answer without loading JAX: :mod:`scoresde_jax.cli` parses with
it and imports the job's module (:data:`scoresde_jax.jobs.JOBS`) only to run it. A choice list
that names things defined in a heavier module is spelled out here and checked against its owner
by ``tests/test_cli_startup.py``: :data:`SAMPLER_NAMES` (``samplers.SAMPLERS``) and
:data:`PREPROCESS_MODES` (``evaluation.inception.PREPROCESS_MODES``).
"""

from __future__ import annotations

import argparse
from typing import Callable

SAMPLER_NAMES = ("adaptive_sde", "ddim", "dpm_solver_pp", "dpm_solver_pp_2s", "dpm_solver_pp_3m",
                 "edm", "heun", "ode", "pc", "unipc")
"""``--method``: the names of ``scoresde_jax.samplers.SAMPLERS``, sorted."""
PREPROCESS_MODES = ("score_sde", "torch_fidelity", "pytorch_fid")
"""``--preprocess``: ``scoresde_jax.evaluation.inception.PREPROCESS_MODES``."""
FEATURES = ("inception", "digits")
"""``fid --features``: the feature networks of :func:`scoresde_jax.jobs.fid.fid`."""
SOURCE_FORMATS = ("score_sde", "edm", "diffusers")
"""``convert --from``: the pretrained formats :func:`scoresde_jax.jobs.convert.convert` reads."""

PROCESS_ARGS = ("command", "verbose", "compilation_cache", "coordinator_address",
                "num_processes", "process_id")
"""Arguments of the process, not of a job (the sub-command and :func:`add_process_arguments`)."""


# ----------------------------------------------------------------------------- shared arguments
def add_process_arguments(p: argparse.ArgumentParser) -> None:
    """``--verbose``, ``--compilation_cache`` and the multi-host flags (:data:`PROCESS_ARGS`)."""
    p.add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    p.add_argument("--compilation_cache", default=None,
                   help="persistent XLA compilation cache directory (default "
                   "$JAX_COMPILATION_CACHE_DIR or ~/.cache/scoresde_jax/xla; 'none' disables)")
    p.add_argument("--coordinator_address", default=None, help="multi-host: host:port of process 0")
    p.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
    p.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")


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
    p.add_argument("--method", default=None, choices=SAMPLER_NAMES,
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


# ----------------------------------------------------------------------------- the jobs

def train_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde train``: ``scoresde_jax.jobs.train.train_and_evaluate``."""
    add_workdir(p, config_required=True,
                       help="directory for checkpoints, logs and samples (resumed if it has some)")
    p.add_argument("--allow_config_change", action="store_true",
                   help="resume a workdir's checkpoints although the model, SDE or data config "
                   "differs from its config.json (recorded in config_history.jsonl; optimizer and "
                   "other keys may change without it)")
    p.add_argument("--no_evaluate", action="store_true",
                   help="only train (no final sampling and quality report)")
    p.add_argument("--num_samples", type=int, default=None,
                   help="samples of the final report (default config.eval.num_samples)")
    add_data_dir(p)
    add_progress(p)


def sample_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde sample``: ``scoresde_jax.jobs.sample.sample``."""
    add_workdir(p, config_required=False, help="the training run's workdir")
    p.add_argument("--num_samples", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="samples per resumable round (default: all in one)")
    p.add_argument("--seed", type=int, default=0,
                   help="image i draws from fold_in(PRNGKey(seed), i): the same at any batch size")
    p.add_argument("--seeds", default=None,
                   help="one image per seed, e.g. 0-63 or 0,5,7-9 (EDM's convention; replaces "
                   "--seed and --num_samples)")
    p.add_argument("--out", default=None,
                   help="output folder (default <workdir>/samples/sample_<step>_<method>_<nfe>)")
    p.add_argument("--png", action="store_true", help="also one PNG per image in OUT/png/")
    add_sampler(p)
    add_conditioning(p)
    add_checkpoint(p)
    add_overwrite(p)
    add_progress(p)


def eval_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde eval``: ``scoresde_jax.jobs.eval.evaluate``."""
    add_workdir(p, config_required=False, help="the training run's workdir")
    p.add_argument("--num_samples", type=int, default=None,
                   help="number of samples (default config.eval.num_samples)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="samples per resumable round (default config.eval.batch_size)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--stats", dest="stats_path", default=None,
                   help="reference statistics file (scoresde stats)")
    add_features(p)
    add_sampler(p)
    add_conditioning(p)
    add_checkpoint(p)
    add_data_dir(p)
    add_overwrite(p)
    add_progress(p)


def likelihood_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde likelihood``: ``scoresde_jax.jobs.likelihood.likelihood``."""
    add_workdir(p, config_required=False, help="the training run's workdir")
    p.add_argument("--num_examples", type=int, default=None,
                   help="first N examples of the split (default: all of it)")
    p.add_argument("--num_batches", type=int, default=None,
                   help="first N batches of the split (instead of --num_examples)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="examples per round (default config.eval.batch_size)")
    p.add_argument("--split", default="test", help="data split (default test)")
    p.add_argument("--seed", type=int, default=0, help="probe / dequantization seed (default 0)")
    p.add_argument("--repeats", type=int, default=None,
                   help="Hutchinson draws per example (default config.eval.likelihood_repeats, 1)")
    p.add_argument("--no_dequantize", action="store_true",
                   help="no uniform dequantization of 8-bit data")
    add_checkpoint(p)
    add_data_dir(p)
    add_overwrite(p)
    add_progress(p)


def stats_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde stats``: ``scoresde_jax.jobs.stats.stats``."""
    add_config(p, what=" (its data section names the dataset)")
    p.add_argument("--out", required=True, help="statistics file to write, e.g. cifar10_stats.npz")
    p.add_argument("--split", default="train", help="dataset split (default train)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per round (default config.eval.batch_size)")
    p.add_argument("--num_examples", type=int, default=None,
                   help="first N images of the split (default: all)")
    add_features(p)
    add_data_dir(p)
    add_overwrite(p)
    add_progress(p)


def fid_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde fid``: ``scoresde_jax.jobs.fid.fid``."""
    p.add_argument("--images", required=True, help="folder or .zip of the images to score")
    p.add_argument("--ref", required=True,
                   help="reference: a statistics .npz (scoresde stats) or a folder / .zip of "
                   "images")
    p.add_argument("--out", default=None, help="results file (default fid.json)")
    p.add_argument("--features", default=None, choices=FEATURES,
                   help="feature network: inception (default; needs --inception) or digits")
    add_features(p)
    p.add_argument("--batch_size", type=int, default=None, help="images per round (default 250)")
    p.add_argument("--num_images", type=int, default=None,
                   help="the first N images of --images (default all)")
    p.add_argument("--image_size", type=int, default=None,
                   help="read every image at this size (default: each set's first image's)")
    p.add_argument("--skip_bad_files", action="store_true",
                   help="leave unreadable files out with a warning instead of stopping")
    p.add_argument("--seed", type=int, default=None, help="KID subset seed (default 0)")
    add_progress(p)


def convert_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde convert``: ``scoresde_jax.jobs.convert.convert``."""
    p.add_argument("source", nargs="?", default=None,
                   help="the pretrained model: an EDM network pickle (.pkl), a diffusers pipeline "
                   "folder, or an official score_sde checkpoint_<step> file / folder")
    p.add_argument("--from", dest="source_format", choices=SOURCE_FORMATS, default="score_sde",
                   help="the format of SOURCE")
    add_config(p, required=False,
               what=" (score_sde: the one the checkpoint was trained with, e.g. "
               "configs/ve/cifar10_ncsnpp_continuous.py; edm / diffusers: none, the file "
               "describes the model)")
    p.add_argument("--workdir", required=True, help="workdir to write the Orbax checkpoint into")
    p.add_argument("--checkpoint", default=None,
                   help="official score_sde checkpoint file (the same as SOURCE)")
    p.add_argument("--dataset", default=None,
                   help="edm / diffusers: the data set named in the workdir's config (default "
                   "CIFAR10 for 32x32 RGB models, else FOLDER)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the checkpoints of a workdir that already has some")


def convert_inception_arguments(p: argparse.ArgumentParser) -> None:
    """``scoresde convert-inception``: ``scoresde_jax.jobs.convert_inception.convert_inception``."""
    p.add_argument("src", help="pt_inception-2015-12-05-6726825d.pth (or its .npz)")
    p.add_argument("--out", default="inception_fid.npz",
                   help="output .npz (default inception_fid.npz)")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "train": train_arguments,
    "sample": sample_arguments,
    "eval": eval_arguments,
    "likelihood": likelihood_arguments,
    "stats": stats_arguments,
    "fid": fid_arguments,
    "convert": convert_arguments,
    "convert-inception": convert_inception_arguments,
}
"""``scoresde <job>`` -> the function declaring its arguments (the keys of ``jobs.JOBS``)."""
