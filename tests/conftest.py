"""Test-wide settings: keep every side effect inside the work tree and make runs reproducible."""

from __future__ import annotations

import os
import pathlib
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

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (``jax.enable_x64``)."""
    with jax.enable_x64(True):
        yield
