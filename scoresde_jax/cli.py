"""``scoresde train | sample | eval | likelihood | convert``: a thin parser over
:mod:`scoresde_jax.commands` (one function per command).

Configs are ml_collections files (official score_sde layout) given with ``--config PATH``; any key can be
overridden as with absl ``config_flags``: ``--config.training.n_iters=2000``. Examples::

    scoresde train --config configs/digits_ddpmpp.py --workdir runs/digits
    scoresde sample --config configs/digits_ddpmpp.py --workdir runs/digits --num_samples 64
    scoresde eval --config configs/digits_ddpmpp.py --workdir runs/digits
    scoresde sample --workdir runs/digits_cond --class 3 --guidance 2.0   # a conditional model

Multi-host: pass ``--coordinator_address host:port --num_processes N --process_id i`` (or set
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``) on every host.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Sequence

import jax

from scoresde_jax import commands, evaluation
from scoresde_jax import config as config_lib
from scoresde_jax.training import NonFiniteLossError, Preempted, WorkdirBusyError, distributed


def split_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--config.a.b=v`` / ``--config.a.b v`` overrides from the other arguments."""
    rest, overrides = [], []
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            body = arg[len("--config."):]
            if "=" not in body:
                if i + 1 >= len(argv):
                    raise SystemExit(f"error: {arg} needs a value (use {arg}=VALUE)")
                body = f"{body}={argv[i + 1]}"
                i += 1
            overrides.append(body)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def load_config(path: str, overrides: Sequence[str]) -> Any:
    """Load a config file and apply ``a.b=value`` overrides; unknown keys are an error naming the
    section's keys (:func:`scoresde_jax.config.load_config`)."""
    return config_lib.load_config(path, overrides)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("absl", "jax", "orbax", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_train(args, config) -> int:
    kw = dict(data_dir=args.data_dir, progress=not args.no_progress)
    if args.no_evaluate:
        res = commands.train(config, args.workdir, **kw)
        _print({"step": res.step, "train": res.metrics, "workdir": res.workdir})
    else:
        _print(commands.train_and_evaluate(config, args.workdir, num_samples=args.num_samples, **kw))
    return 0


def cmd_sample(args, config) -> int:
    n = 64 if args.num_samples is None else args.num_samples
    _, path = commands.sample(config, args.workdir, num_samples=n, out=args.out, seed=args.seed,
                              checkpoint=args.checkpoint, method=args.method, nfe=args.nfe,
                              batch_size=args.batch_size, png=args.png,
                              progress=not args.no_progress, **_conditioning(args))
    _print({"samples": path, "summary": os.path.join(os.path.dirname(path), "summary.json")})
    return 0


def cmd_eval(args, config) -> int:
    _print(commands.evaluate(config, args.workdir, num_samples=args.num_samples, out=args.out,
                             seed=args.seed, checkpoint=args.checkpoint,
                             batch_size=args.batch_size, inception_path=args.inception,
                             stats_path=args.stats, preprocess=args.preprocess,
                             method=args.method, nfe=args.nfe, progress=not args.no_progress,
                             **_conditioning(args)))
    return 0


def _conditioning(args) -> dict:
    """The --class / --guidance / --classifier / --classifier_scale arguments given."""
    return {k: v for k, v in dict(classes=args.classes, guidance=args.guidance,
                                  classifier=args.classifier,
                                  classifier_scale=args.classifier_scale).items()
            if v is not None}


def cmd_likelihood(args, config) -> int:
    _print(commands.likelihood(config, args.workdir, num_batches=args.num_batches,
                               data_dir=args.data_dir, seed=args.seed, repeats=args.repeats,
                               dequantize=False if args.no_dequantize else None,
                               num_examples=args.num_examples, batch_size=args.batch_size,
                               progress=not args.no_progress, checkpoint=args.checkpoint))
    return 0


def cmd_stats(args, config) -> int:
    if not args.out:
        raise ValueError("stats needs --out STATS.npz (e.g. --out cifar10_stats.npz)")
    _print(commands.stats(config, args.out, split=args.split, batch_size=args.batch_size,
                          inception_path=args.inception, preprocess=args.preprocess,
                          data_dir=args.data_dir, num_examples=args.num_samples,
                          progress=not args.no_progress))
    return 0


def cmd_convert_inception(args, config) -> int:
    _print({"inception": evaluation.convert_weights(args.src, args.out or "inception_fid.npz")})
    return 0


def cmd_convert(args, config) -> int:
    _print(commands.convert(config, args.checkpoint, args.workdir, overwrite=args.overwrite))
    return 0


COMMANDS = {
    "train": (cmd_train, "train (and by default sample + evaluate) a score model"),
    "sample": (cmd_sample, "sample a PNG grid with the latest EMA checkpoint of a workdir"),
    "eval": (cmd_eval, "sample and compute quality metrics (digits: classifier accuracy / Frechet "
                       "distance)"),
    "likelihood": (cmd_likelihood, "bits/dim via the probability-flow ODE"),
    "convert": (cmd_convert, "convert an official score_sde checkpoint into an Orbax checkpoint in "
                             "--workdir"),
    "stats": (cmd_stats, "reference Inception (digits: classifier) statistics of a dataset split "
                         "(pool_3, mu, sigma), as score_sde's assets/stats files"),
    "convert-inception": (cmd_convert_inception, "convert the FID Inception weights "
                                                 "(pt_inception-2015-12-05-6726825d.pth) to .npz"),
}


_WORKDIR_JOBS = ("sample", "eval", "likelihood")  # jobs on a trained workdir (its config.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scoresde", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, (_, help_) in COMMANDS.items():
        s = sub.add_parser(name, help=help_, description=help_ + ". Override config keys with --config.a.b=VALUE.")
        s.add_argument("--config", required=name not in _WORKDIR_JOBS + ("convert-inception",),
                       help="config file (ml_collections, get_config())"
                       + ("; default: the workdir's config.json" if name in _WORKDIR_JOBS else ""))
        s.add_argument("--workdir", required=name not in ("stats", "convert-inception"),
                       help="directory for checkpoints, logs and samples")
        s.add_argument("--data_dir", default=None, help="TFDS data dir (not needed for the embedded data)")
        s.add_argument("--num_samples", type=int, default=None, help="number of samples")
        s.add_argument("--out", default=None,
                       help="output: the sample folder (sample), the PNG/JSON path (others)")
        s.add_argument("--seed", type=int, default=0, help="sampling seed")
        s.add_argument("--verbose", action="store_true")
        s.add_argument("--compilation_cache", default=None,
                       help="persistent XLA compilation cache directory (default "
                       "$JAX_COMPILATION_CACHE_DIR or ~/.cache/scoresde_jax/xla; 'none' disables)")
        s.add_argument("--coordinator_address", default=None, help="multi-host: host:port of process 0")
        s.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
        s.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")
        if name == "train":
            s.add_argument("--no_evaluate", action="store_true", help="only train (no final sampling/metrics)")
            s.add_argument("--no_progress", action="store_true", help="log lines instead of a progress bar")
        if name in ("sample", "eval"):
            s.add_argument("--method", default=None,
                           help="sampler (a key of samplers.SAMPLERS; default config.sampling.method)")
            s.add_argument("--nfe", type=int, default=None,
                           help="budget of score evaluations (the method picks its steps)")
            s.add_argument("--class", dest="classes", default=None,
                           help="class-conditional model: the class(es) to sample, e.g. 3 or "
                           "0,1,2 (cycled over the samples; default all, config.eval.classes)")
            s.add_argument("--guidance", type=float, default=None,
                           help="classifier-free guidance scale w: (1 + w) s(x, t, y) - w s(x, t, "
                           "null) (default config.eval.guidance, else 0)")
            s.add_argument("--classifier", default=None,
                           help="workdir of a noise-conditional classifier: classifier guidance "
                           "of the unconditional score (instead of --guidance)")
            s.add_argument("--classifier_scale", type=float, default=None,
                           help="classifier guidance scale (default 1: Bayes' rule)")
        if name == "sample":
            s.add_argument("--batch_size", type=int, default=None,
                           help="samples per resumable round (default: all in one)")
            s.add_argument("--png", action="store_true", help="also one PNG per image in OUT/png/")
            s.add_argument("--no_progress", action="store_true", help="no progress bar")
        if name == "likelihood":
            s.add_argument("--num_batches", type=int, default=None)
            s.add_argument("--num_examples", type=int, default=None,
                           help="first N test examples (default: the whole split)")
            s.add_argument("--repeats", type=int, default=None, help="Hutchinson draws per example")
            s.add_argument("--no_dequantize", action="store_true",
                           help="no uniform dequantization of 8-bit data")
        if name in ("eval", "stats", "likelihood"):
            s.add_argument("--batch_size", type=int, default=None,
                           help="round size (default config.eval.batch_size)")
            s.add_argument("--no_progress", action="store_true", help="no progress bar")
        if name in ("eval", "stats"):
            s.add_argument("--inception", default=None,
                           help="converted Inception weights (.npz of convert-inception)")
            s.add_argument("--preprocess", default=None,
                           help="score_sde (default), torch_fidelity or pytorch_fid")
        if name in _WORKDIR_JOBS:
            s.add_argument("--checkpoint", type=int, default=None,
                           help="checkpoint step (default: the newest good one)")
        if name == "eval":
            s.add_argument("--stats", default=None, help="reference statistics file (stats)")
        if name == "stats":
            s.add_argument("--split", default="train", help="dataset split (default train)")
        if name == "convert-inception":
            s.add_argument("src", help="pt_inception-2015-12-05-6726825d.pth (or its .npz)")
        if name == "convert":
            s.add_argument("--checkpoint", required=True, help="official score_sde checkpoint file")
            s.add_argument("--overwrite", action="store_true",
                           help="write into a workdir that already has checkpoints")
    return p


def setup_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``$JAX_COMPILATION_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/scoresde_jax/xla`` or ``~/.cache/scoresde_jax/xla``; ``'none'`` turns it
    off), so that a second run of the same config loads its compiled programs instead of
    recompiling them. Programs compiling in under 0.5 s are not stored (unless
    ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` says otherwise). Returns the directory."""
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(base, "scoresde_jax",
                                                                           "xla")
    if path.strip().lower() in ("", "none", "off"):
        return None
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = split_overrides(argv)
    args = build_parser().parse_args(rest)
    _setup_logging(args.verbose)
    setup_compilation_cache(args.compilation_cache)
    try:
        if args.command in _WORKDIR_JOBS:
            config = config_lib.config_for_workdir(args.config, args.workdir, overrides)
        else:
            config = load_config(args.config, overrides) if args.config else None
        distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
        return COMMANDS[args.command][0](args, config)
    except Preempted as e:
        print(f"scoresde {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except (NonFiniteLossError, WorkdirBusyError) as e:
        print(f"scoresde {args.command}: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, NotImplementedError) as e:
        if args.verbose:
            raise
        print(f"scoresde {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
