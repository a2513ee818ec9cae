"""Test-wide settings: keep every side effect inside the work tree and make runs reproducible."""

from __future__ import annotations

import atexit
import os
import pathlib
import shutil
import tempfile

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_CACHE = _ROOT / ".cache"
_CACHE.mkdir(exist_ok=True)
os.environ.setdefault("MPLCONFIGDIR", str(_CACHE / "matplotlib"))
os.environ.setdefault("TFDS_DATA_DIR", str(_CACHE / "tfds"))
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_tmp = _CACHE / "tmp"
_tmp.mkdir(exist_ok=True)
os.environ["TMPDIR"] = str(_tmp)
tempfile.tempdir = str(_tmp)
# A job run without --compilation_cache uses $XDG_CACHE_HOME/scoresde_jax/xla: one empty folder
# per test session inside the work tree, never the user's cache (which may hold thousands of
# entries that JAX's bounded cache scans at every write).
_xdg = pathlib.Path(tempfile.mkdtemp(prefix="xdg-", dir=_tmp))
os.environ["XDG_CACHE_HOME"] = str(_xdg)
atexit.register(shutil.rmtree, _xdg, ignore_errors=True)

import jax  # noqa: E402
import pytest  # noqa: E402
from jax.experimental.compilation_cache import compilation_cache as _jax_cache  # noqa: E402

_CACHE_OPTIONS = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
                  "jax_persistent_cache_min_compile_time_secs", "jax_compilation_cache_max_size")


@pytest.fixture(autouse=True)
def _restore_compilation_cache():
    """A job run in-process turns on the persistent compilation cache for the whole process
    (``runner.setup_compilation_cache``; every program stored). Put JAX's cache options back
    after each test, so that the tests after it do not write every program they compile."""
    before = {k: getattr(jax.config, k) for k in _CACHE_OPTIONS}
    yield
    if any(getattr(jax.config, k) != v for k, v in before.items()):
        for k, v in before.items():
            jax.config.update(k, v)
        _jax_cache.reset_cache()


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (``jax.enable_x64``)."""
    with jax.enable_x64(True):
        yield
