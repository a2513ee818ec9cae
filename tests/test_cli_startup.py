"""`scoresde --help`, `scoresde <job> --help` and argument errors load no heavy library (JAX,
TFDS, ...): the command line parses with scoresde_jax.jobs.arguments and imports a job's module
only to run it. The choice lists spelled out there agree with the modules that own them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scoresde_jax import evaluation, samplers
from scoresde_jax.jobs import JOBS
from scoresde_jax.jobs import arguments as A

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("jax", "jaxlib", "flax", "optax", "orbax", "grain", "diffrax", "tensorflow",
         "tensorflow_datasets", "tensorboardX", "sklearn", "numpy", "PIL", "ml_collections")

_PROBE = """
import contextlib, io, json, sys
from scoresde_jax import cli
from scoresde_jax.jobs import JOBS
calls = [["--help"], []] + [[job, "--help"] for job in JOBS] + [
    ["sample", "--workdir", "w", "--bogus"], ["sample", "--workdir", "w", "--method", "nope"],
    ["stats", "--config", "c.py", "--out", "o", "--preprocess", "nope"], ["bogus"]]
codes = []
for argv in calls:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit as e:
            codes.append(e.code)
print(json.dumps({"codes": codes, "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_help_and_argument_errors_import_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["codes"] == [0, 2] + [0] * len(JOBS) + [2, 2, 2, 2]
    loaded = sorted(set(HEAVY) & set(report["modules"]))
    assert not loaded, f"the command line imported {loaded} before running a job"


def test_choices_agree_with_their_owners():
    assert A.SAMPLER_NAMES == tuple(sorted(samplers.SAMPLERS)), \
        "a sampler was added or renamed: list it in scoresde_jax/jobs/arguments.py SAMPLER_NAMES"
    assert A.PREPROCESS_MODES == evaluation.PREPROCESS_MODES
    assert list(A.ARGUMENTS) == list(JOBS)


_CACHE_PROBE = """
import json, os, sys, warnings
import jax, jax.numpy as jnp
from scoresde_jax.runner import CACHE_MAX_BYTES, setup_compilation_cache
path = sys.argv[1]
setup_compilation_cache(path)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.ones(3)).block_until_ready()
print(json.dumps({"max": jax.config.jax_compilation_cache_max_size, "bound": CACHE_MAX_BYTES,
                  "files": sorted(os.listdir(path)),
                  "warnings": [str(w.message) for w in caught if "cache" in str(w.message)]}))
"""


def test_the_compilation_cache_is_bounded_and_keeps_entries_of_an_unbounded_one(tmp_path):
    """The CLI's cache has a size bound (so JAX locks the folder for every read and write);
    an entry written without a bound gets its access time, so new programs are still stored."""
    cache = tmp_path / "xla"
    cache.mkdir()
    (cache / "jit_old-0123-cache").write_bytes(b"an entry of an unbounded cache")
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_MAX_SIZE", None)
    out = subprocess.run([sys.executable, "-c", _CACHE_PROBE, str(cache)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["max"] == report["bound"] > 0
    assert not report["warnings"], report["warnings"]
    files = report["files"]
    assert "jit_old-0123-atime" in files and ".lockfile" in files
    new = [f for f in files if f.endswith("-cache") and f != "jit_old-0123-cache"]
    assert new and all(f[:-len("-cache")] + "-atime" in files for f in new), files


def test_the_compilation_cache_turned_off_by_the_variable_writes_nothing(tmp_path):
    """``JAX_COMPILATION_CACHE_DIR=none`` turns the cache off; JAX also reads that variable itself,
    which must not make a folder called 'none' in the working directory."""
    probe = ("import jax, jax.numpy as jnp\n"
             "from scoresde_jax.runner import setup_compilation_cache\n"
             "assert setup_compilation_cache() is None\n"
             "jax.jit(lambda x: jnp.sin(x) * 2.0)(jnp.ones(3)).block_until_ready()\n")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": "none", "JAX_PLATFORMS": "cpu",
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True,
                   text=True, timeout=300, check=True)
    assert not list(tmp_path.iterdir())


_CONFIG_PROBE = """
import contextlib, io, json, sys
from scoresde_jax import cli
calls = [["train", "--config", "configs/nonexistent.py", "--workdir", "w"],
         ["train", "--config", "configs/digits_ddpmpp.py", "--workdir", "w",
          "--config.training.bogus=3"],
         ["train", "--config", "configs/digits_ddpmpp.py", "--workdir", "w",
          "--config.training.n_iters=many"],
         ["sample", "--workdir", sys.argv[1]],
         ["eval", "--workdir", sys.argv[1] + "/missing"]]
out = []
for argv in calls:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    out.append([code, err.getvalue().strip()])
print(json.dumps({"results": out, "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_config_errors_are_found_before_the_library_loads(tmp_path):
    """A missing config file, an unknown or mistyped override and a workdir without a saved config
    are refused in one line with exit code 2 before JAX is imported (a fraction of a second)."""
    out = subprocess.run([sys.executable, "-c", _CONFIG_PROBE, str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    report = json.loads(out.strip().splitlines()[-1])
    codes = [code for code, _ in report["results"]]
    messages = [message for _, message in report["results"]]
    assert codes == [2] * 5, report["results"]
    assert all(m.count("\n") == 0 and ": error: " in m for m in messages), messages
    assert "does not exist" in messages[0] and "unknown key 'bogus'" in messages[1]
    assert "n_iters=many" in messages[2] and "config.json" in messages[3]
    assert "does not exist" in messages[4]
    jax_like = {"jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets"}
    assert not jax_like & set(report["modules"]), sorted(jax_like & set(report["modules"]))


def test_a_second_cache_setup_in_one_process_takes_effect(tmp_path, monkeypatch):
    """JAX opens its cache once per process: ``setup_compilation_cache`` resets it, so that a
    notebook (or a job run in-process) that moves or turns off the cache gets what it asked for."""
    import jax
    import jax.numpy as jnp

    from scoresde_jax.runner import setup_compilation_cache

    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    entries = lambda d: [f for f in os.listdir(d) if f.startswith("jit__lambda")  # noqa: E731
                         and f.endswith("-cache")] if d.exists() else []
    first, second = tmp_path / "first", tmp_path / "second"
    setup_compilation_cache(str(first))
    jax.jit(lambda x: jnp.sin(x) * 3.0)(jnp.ones(3)).block_until_ready()
    setup_compilation_cache(str(second))
    jax.jit(lambda x: jnp.cos(x) * 5.0)(jnp.ones(3)).block_until_ready()
    assert len(entries(first)) == 1 and len(entries(second)) == 1
    assert setup_compilation_cache("none") is None
    jax.jit(lambda x: jnp.tan(x) * 7.0)(jnp.ones(3)).block_until_ready()
    assert len(entries(first)) == 1 and len(entries(second)) == 1
