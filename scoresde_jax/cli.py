"""``scoresde <job>``: the one command line, assembled from the jobs of
:data:`scoresde_jax.jobs.JOBS` (each job's arguments: :mod:`scoresde_jax.jobs.arguments`).

Configs are ml_collections files (official score_sde layout) given with ``--config PATH``; any key can be
overridden as with absl ``config_flags``: ``--config.training.n_iters=2000``. Examples::

    scoresde train --config configs/digits_ddpmpp.py --workdir runs/digits
    scoresde sample --workdir runs/digits --num_samples 64 --method unipc --nfe 20
    scoresde eval --workdir runs/digits
    scoresde sample --workdir runs/digits_cond --class 3 --guidance 2.0   # a conditional model

Multi-host: pass ``--coordinator_address host:port --num_processes N --process_id i`` (or set
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``) on every host.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from scoresde_jax.jobs import JOBS, WORKDIR_JOBS
from scoresde_jax.jobs.arguments import ARGUMENTS, add_process_arguments

# This module imports nothing heavy: parsing, --help and argument errors need no JAX; the library
# (scoresde_jax.runner) is imported in main() once the arguments are good.


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


def build_parser(job: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``scoresde``; the arguments of ``job`` (None: every job's)."""
    p = argparse.ArgumentParser(
        prog="scoresde", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(JOBS) + "}")
    for name, (_, _, help_) in JOBS.items():
        s = sub.add_parser(name, help=help_, description=help_ + ".",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if job is None or name == job:
            ARGUMENTS[name](s)
            add_process_arguments(s)
    return p


def _job_name(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """``scoresde <job> ...``: parse the arguments, then run the job
    (:func:`scoresde_jax.runner.execute`); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = split_overrides(argv)
    name = _job_name(rest)
    args = build_parser(name if name in JOBS else None).parse_args(rest)
    problem = config_problem(args, overrides)
    if problem:
        print(f"scoresde {args.command}: error: {problem}", file=sys.stderr)
        return 2
    from scoresde_jax import runner  # the library, only once the job's config is good

    return runner.execute(args, overrides)


def config_problem(args: argparse.Namespace, overrides: Sequence[str]) -> str | None:
    """What is wrong with the job's config file and ``--config.*`` overrides (a missing file, a
    syntax error, an unknown key, a value of the wrong type), found without JAX; None if
    nothing. The runner loads the same config again (it is cheap) and builds the job from it."""
    from scoresde_jax import config_files  # ml_collections, and the config file's own imports

    path, workdir = getattr(args, "config", None), getattr(args, "workdir", None)
    try:
        if args.command in WORKDIR_JOBS:
            config_files.config_for_workdir(path, workdir, overrides)
        elif path is not None:
            config_files.load_config(path, overrides)
    except (ValueError, TypeError, OSError, SyntaxError, ImportError, AttributeError) as e:
        if getattr(args, "verbose", False):
            raise
        return " ".join(str(e).split())[:500] or type(e).__name__
    return None


if __name__ == "__main__":
    sys.exit(main())
