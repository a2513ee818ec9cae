#!/usr/bin/env python3
"""Bootstrap and run scoresde_jax on a fresh machine that has only Python 3.11+.

    python3 dev.py main   # make .venv, install, train a small model on embedded data, sample, write PNG + metric
    python3 dev.py test   # make .venv, install, run the test suite (what CI runs)

Other targets: ``slow`` (the slow tests), ``bench`` (benchmarks), ``toy`` (2-D sampling demo with exact scores).
Extra arguments after the target go to the underlying command.  Every cache (uv, pip, matplotlib, TFDS, tmp)
stays under ``.cache/`` in this folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
CACHE = ROOT / ".cache"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed"


def _env() -> dict:
    env = dict(os.environ)
    for key, sub in (("UV_CACHE_DIR", "uv"), ("PIP_CACHE_DIR", "pip"), ("MPLCONFIGDIR", "matplotlib"),
                     ("TFDS_DATA_DIR", "tfds")):
        env.setdefault(key, str(CACHE / sub))
    tmp = CACHE / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.setdefault("TMPDIR", str(tmp))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(cmd, **kw) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=_env(), **kw)


def bootstrap() -> None:
    """Create .venv and install the package with its test extras (uv when available, else pip)."""
    if sys.version_info < (3, 11):
        sys.exit(f"scoresde_jax needs Python >= 3.11; this is {sys.version.split()[0]}.")
    CACHE.mkdir(exist_ok=True)
    if not PY.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = (ROOT / "pyproject.toml").stat().st_mtime
    if STAMP.exists() and STAMP.read_text() == str(spec):
        return
    req = [f"-e{ROOT}[test]"]
    if _run([PY, "-m", "pip", "install", "-q", "uv"]) == 0 and \
            _run([PY, "-m", "uv", "pip", "install", "-q", "-p", PY, *req]) == 0:
        STAMP.write_text(str(spec))
        return
    print("uv failed; falling back to pip", flush=True)
    if _run([PY, "-m", "pip", "install", "-q", *req]) != 0:
        sys.exit("installation failed (see the messages above)")
    STAMP.write_text(str(spec))


TARGETS = {
    "main": [PY, "-m", "experiments.quickstart"],
    "toy": [PY, "-m", "experiments.toy2d"],
    "test": [PY, "-m", "pytest", "tests", "-m", "not slow", "-q"],
    "slow": [PY, "-m", "pytest", "tests", "-m", "slow", "-q"],
    "bench": [PY, "-m", "benchmarks.run_all"],
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in TARGETS:
        print(__doc__)
        return 2
    bootstrap()
    rc = _run([*TARGETS[argv[0]], *argv[1:]])
    if argv[0] in ("test", "slow") and rc == 5:
        print("pytest collected no tests: treating that as a failure", file=sys.stderr)
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
