"""``scoresde <job>``: the one command line, assembled from the jobs of
:data:`scoresde_jax.jobs.JOBS` (each job module declares its own arguments).

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
import importlib
import json
import logging
import os
import sys
from typing import Any, Sequence

import jax

from scoresde_jax import config as config_lib
from scoresde_jax import pretrained
from scoresde_jax.jobs import JOBS
from scoresde_jax.training import NonFiniteLossError, Preempted, WorkdirBusyError, distributed

# Arguments of the process, not of a job.
_PROCESS_ARGS = ("command", "verbose", "compilation_cache", "coordinator_address",
                 "num_processes", "process_id")
# Jobs on a trained workdir: without --config they read the workdir's config.json.
_WORKDIR_JOBS = ("sample", "eval", "likelihood")


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


def _add_process_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    p.add_argument("--compilation_cache", default=None,
                   help="persistent XLA compilation cache directory (default "
                   "$JAX_COMPILATION_CACHE_DIR or ~/.cache/scoresde_jax/xla; 'none' disables)")
    p.add_argument("--coordinator_address", default=None, help="multi-host: host:port of process 0")
    p.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
    p.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")


def build_parser(job: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``scoresde``; the arguments of ``job`` (only that job's module is
    imported; None: every job's)."""
    p = argparse.ArgumentParser(
        prog="scoresde", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="{" + ",".join(JOBS) + "}")
    for name, (module, _, help_) in JOBS.items():
        s = sub.add_parser(name, help=help_, description=help_ + ".",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if job is None or name == job:
            importlib.import_module(module).add_arguments(s)
            _add_process_arguments(s)
    return p


def _job_name(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbose: bool) -> None:
    """The library's INFO (``--verbose``: DEBUG) records on stderr: through the root logger's
    handlers when something installed one, else through a handler of the library's logger."""
    lib = logging.getLogger("scoresde_jax")
    lib.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not logging.getLogger().handlers and not any(isinstance(h, _StderrHandler)
                                                    for h in lib.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        lib.addHandler(handler)
    for noisy in ("absl", "jax", "orbax", "grain"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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


def _given(args: argparse.Namespace) -> dict:
    """The job's own arguments; ``--no_x`` flags become ``x=False``."""
    given = {}
    for key, value in vars(args).items():
        if key in _PROCESS_ARGS:
            continue
        if key.startswith("no_"):
            given[key[3:]] = not value
        else:
            given[key] = value
    return given


def run(name: str, args: argparse.Namespace, overrides: Sequence[str] = ()) -> Any:
    """Run job ``name`` with its parsed arguments: config -> setup and options at the config
    boundary, then the job's function."""
    module, function, _ = JOBS[name]
    fn = getattr(importlib.import_module(module), function)
    given = _given(args)
    path, workdir = given.pop("config", None), given.pop("workdir", None)
    if name == "convert" and given.get("source_format", "score_sde") != "score_sde":
        src = given.get("source") or given.get("checkpoint")
        if src is None:
            raise ValueError("convert needs the pretrained model: SOURCE (or --checkpoint).")
        p = pretrained.load(src, format=given["source_format"], dataset=given.get("dataset"))
        setup = config_lib.setup(p.config, model=p.model)
        options = config_lib.convert_options(p.config, setup, pretrained=p, **given)
        return fn(setup, options, workdir)
    if path is None and name not in _WORKDIR_JOBS:
        if overrides:
            raise ValueError(f"{name} takes no config: drop the --config.* overrides.")
        return fn(**given)
    if name in _WORKDIR_JOBS:
        config = config_lib.config_for_workdir(path, workdir, overrides)
    else:
        config = config_lib.load_config(path, overrides)
    setup = config_lib.JOB_SETUP.get(name, config_lib.setup)(config)
    options = config_lib.JOB_OPTIONS[name](config, setup, **given)
    _log_to_workdir(name, workdir)
    return fn(setup, options) if workdir is None else fn(setup, options, workdir)


def _one_line(e: BaseException) -> str:
    """An exception as one line: its message, with the type for OS and import errors."""
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, ImportError):
        return f"{text} (a missing optional dependency: pip install it, e.g. '.[test]')"
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
        return f"{type(e).__name__}: {text}"
    return text[:500]


def _log_to_workdir(name: str, workdir: str | None) -> None:
    """Also write the library's log records to ``<workdir>/logs/<job>.log`` (main process)."""
    if not workdir or not os.path.isdir(workdir) or not distributed.is_main_process():
        return
    lib = logging.getLogger("scoresde_jax")
    path = os.path.abspath(os.path.join(workdir, "logs", f"{name}.log"))
    if any(getattr(h, "baseFilename", None) == path for h in lib.handlers):
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    lib.addHandler(handler)


def _jsonable(result: Any) -> Any:
    return getattr(result, "summary", result)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rest, overrides = split_overrides(argv)
    name = _job_name(rest)
    args = build_parser(name if name in JOBS else None).parse_args(rest)
    _setup_logging(args.verbose)
    setup_compilation_cache(args.compilation_cache)
    try:
        distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
        result = run(args.command, args, overrides)
    except Preempted as e:
        print(f"scoresde {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except (NonFiniteLossError, WorkdirBusyError) as e:
        print(f"scoresde {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"scoresde {args.command}: interrupted; rerun the same command to resume (finished "
              "rounds and checkpoints are kept).", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, NotImplementedError) as e:
        if args.verbose:
            raise
        print(f"scoresde {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # XLA runtime errors (out of memory, ...)
        if args.verbose or "RESOURCE_EXHAUSTED" not in str(e):
            raise
        print(f"scoresde {args.command}: error: out of memory on the device ({_one_line(e)}); "
              "lower --batch_size (or config.training.batch_size / config.eval.batch_size).",
              file=sys.stderr)
        return 2
    print(json.dumps(_jsonable(result), indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
