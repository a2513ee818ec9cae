"""The tutorial notebooks run top to bottom in a fresh Jupyter kernel and draw their pictures.

Each notebook is executed with nbclient (the ``notebook`` extra: ipykernel, nbclient, matplotlib);
any cell that raises fails the test, and a notebook must produce PNG images (``display_data`` with
``image/png``). All four run in CI: sizes are small, each notebook takes 40-80 s of kernel CPU (measured
on the shared 2-core machine under load; ``experiments/notebooks/time_notebooks.py`` prints it per cell),
about 4 minutes for the four.

    python experiments/notebooks/build_notebooks.py        # after editing a notebook's cells (nb0*_*.py)
    .venv/bin/python -m pytest tests/test_notebooks.py -q -s   # -s prints each notebook's seconds
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "experiments" / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 600


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _children_cpu() -> float:
    """User + system seconds of the finished child processes (the kernel, once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _execute(path: Path, tmp_path: Path):
    nbformat = pytest.importorskip("nbformat", reason="install the notebook extra: pip install -e '.[notebook]'")
    nbclient = pytest.importorskip("nbclient", reason="install the notebook extra: pip install -e '.[notebook]'")
    pytest.importorskip("ipykernel", reason="install the notebook extra: pip install -e '.[notebook]'")
    nb = nbformat.read(path, as_version=4)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONPATH": str(ROOT),
           "NOTEBOOK_WORKDIR": str(tmp_path)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT)}})
        client.execute()  # raises CellExecutionError naming the cell when one raises
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_and_draws(path, tmp_path):
    t0, cpu0 = time.perf_counter(), _children_cpu()
    nb = _execute(path, tmp_path)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    images = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") in ("display_data", "execute_result")
              and "image/png" in out.get("data", {})]
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    print(f"{path.name}: {seconds:.0f} s wall, {cpu:.0f} s CPU of the kernel, {len(images)} images")
    assert not errors, f"{path.name}: a cell raised: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert len(images) >= 2, f"{path.name} drew {len(images)} PNG images; its cells should show pictures"


def test_notebooks_are_built_from_their_source():
    """The .ipynb files equal what build_notebooks.py writes from the nb0*_*.py cell modules (edit
    those, not the JSON), and are stored without outputs."""
    mod = _builder()
    assert sorted(mod.NOTEBOOKS) == [p.name for p in NOTEBOOKS]
    for name, cells in mod.NOTEBOOKS.items():
        on_disk = json.loads((NB_DIR / name).read_text())
        assert on_disk == mod.to_ipynb(cells), f"{name} is stale: run python {NB_DIR / 'build_notebooks.py'}"
        for cell in on_disk["cells"]:
            assert not cell.get("outputs"), f"{name} is stored with outputs"
