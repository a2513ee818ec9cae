"""What ``scoresde <job>`` does once :mod:`scoresde_jax.cli` has parsed its arguments: the process
(logging, the persistent compilation cache, multi-host start), the job (config -> setup and
options at the config boundary -> the job's function, :data:`scoresde_jax.jobs.JOBS`) and its
outcome (the result as JSON on stdout, or one line on stderr and an exit code).

The CLI imports this module only when a job runs, so that ``--help`` and argument errors answer
without loading JAX.
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
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from scoresde_jax import config as config_lib
from scoresde_jax import pretrained
from scoresde_jax.jobs.convert import check_target
from scoresde_jax.pretrained import score_sde
from scoresde_jax.jobs import JOBS, WORKDIR_JOBS
from scoresde_jax.jobs.arguments import PROCESS_ARGS
from scoresde_jax.training import NonFiniteLossError, Preempted, WorkdirBusyError, distributed

# Jobs on a trained workdir: without --config they read the workdir's config.json.
# The default bound of the persistent compilation cache (least recently used entries go first).
CACHE_MAX_BYTES = 2 * 1024 ** 3
# The names of a cache entry and of its access time in JAX's file cache (jax/_src/lru_cache.py).
_CACHE_SUFFIX, _ATIME_SUFFIX = "-cache", "-atime"


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup_logging(verbose: bool) -> None:
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
    else ``$XDG_CACHE_HOME/scoresde_jax/xla`` or ``~/.cache/scoresde_jax/xla``; ``'none'`` or
    ``'off'``, as the argument or the variable, turns it off), so that a second run of the same
    config loads its compiled programs instead of recompiling them. Every program is stored,
    however short its compile (``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` sets a minimum):
    a second run then compiles nothing at all. The cache holds at most
    :data:`CACHE_MAX_BYTES` (unless ``$JAX_COMPILATION_CACHE_MAX_SIZE`` gives another number of
    bytes; -1: no bound): past it, JAX deletes the least recently used entries, and every read
    and write of the folder then holds its lock file, so concurrent jobs never read an entry
    another is writing. A later call in the same process (a notebook, a test) takes effect for
    the programs compiled after it. Returns the directory."""
    # JAX opens its cache once per process, at the first compile after a folder is set: reset
    # it so that this call's folder and options apply from the next compile on.
    jax_cache.reset_cache()
    if path is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(base, "scoresde_jax",
                                                                           "xla")
    if path.strip().lower() in ("", "none", "off"):
        # JAX reads $JAX_COMPILATION_CACHE_DIR itself at import: 'none' there would be a folder
        jax.config.update("jax_enable_compilation_cache", False)
        jax.config.update("jax_compilation_cache_dir", None)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    if jax.config.jax_compilation_cache_max_size != -1:
        adopt_unbounded_entries(path)
    return path


def adopt_unbounded_entries(path: str) -> int:
    """Give every entry of the cache folder ``path`` that an unbounded cache wrote (JAX's
    ``<key>-cache`` file without its ``<key>-atime`` file, see ``jax/_src/lru_cache.py``) an
    access time, its modification time: a bounded cache reads every entry's access time before
    it writes, and fails to store anything while one is missing. Returns the number adopted."""
    if not os.path.isdir(path):
        return 0
    adopted = 0
    for name in os.listdir(path):
        if not name.endswith(_CACHE_SUFFIX):
            continue
        entry = os.path.join(path, name)
        atime = entry[:-len(_CACHE_SUFFIX)] + _ATIME_SUFFIX
        if os.path.exists(atime):
            continue
        try:
            stamp = os.stat(entry).st_mtime_ns
            with open(atime, "xb") as f:
                f.write(stamp.to_bytes(8, "little"))
            adopted += 1
        except OSError:  # evicted or adopted by another process meanwhile
            pass
    return adopted


def _given(args: argparse.Namespace) -> dict:
    """The job's own arguments; ``--no_x`` flags become ``x=False``."""
    given = {}
    for key, value in vars(args).items():
        if key in PROCESS_ARGS:
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
    if path is None and name not in WORKDIR_JOBS:
        if overrides:
            raise ValueError(f"{name} takes no config: drop the --config.* overrides.")
        return fn(**given)
    if name in WORKDIR_JOBS:
        config = config_lib.config_for_workdir(path, workdir, overrides)
    else:
        config = config_lib.load_config(path, overrides)
    setup = config_lib.JOB_SETUP.get(name, config_lib.setup)(config)
    if name == "convert":  # the official checkpoint, read once and mapped onto the model
        src = given.get("source") or given.get("checkpoint")
        if src is None:
            raise ValueError("convert needs the pretrained model: SOURCE (or --checkpoint).")
        check_target(workdir, bool(given.get("overwrite")))
        given["official"] = score_sde.load_checkpoint(
            src, setup.abstract_state().params,
            model_desc=score_sde.describe_model(setup.model, setup.input_shape[1:]))
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


def execute(args: argparse.Namespace, overrides: Sequence[str] = ()) -> int:
    """Set up the process from ``args``, run the job and report it: the result as JSON on stdout
    (exit code 0), or a one-line error on stderr (2; 1 for a diverged or busy run, 130 for
    Ctrl-C, the preemption code for a preempted one). ``--verbose`` shows full tracebacks."""
    setup_logging(args.verbose)
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
