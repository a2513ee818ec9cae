"""The tutorial notebooks run top to bottom in a fresh Jupyter kernel, draw their pictures, and are
stored with current outputs.

Each notebook is executed with nbclient (the ``notebook`` extra: ipykernel, nbclient, matplotlib);
any cell that raises fails the test, a notebook must produce PNG images, and its fresh outputs must
match the stored ones (``build_notebooks.compare_outputs``: the same outputs per cell, pictures
within a small mean absolute difference, text equal up to its numbers). All four run in CI: sizes
are small, each notebook takes 40-80 s of kernel CPU (measured on the shared 2-core machine under
load; ``experiments/notebooks/time_notebooks.py`` prints it per cell), about 4 minutes for the four.

    python experiments/notebooks/build_notebooks.py --execute  # after editing a notebook's cells (nb0*_*.py)
    .venv/bin/python -m pytest tests/test_notebooks.py -q -s   # -s prints each notebook's seconds
"""

from __future__ import annotations

import importlib.util
import json
import resource
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "experiments" / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
REBUILD = f"python {NB_DIR.relative_to(ROOT) / 'build_notebooks.py'} --execute"


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _children_cpu() -> float:
    """User + system seconds of the finished child processes (the kernel, once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _images(nb: dict) -> list:
    return [out for cell in nb["cells"] if cell["cell_type"] == "code" for out in cell["outputs"]
            if out["output_type"] in ("display_data", "execute_result") and "image/png" in out["data"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_draws_and_its_stored_outputs_are_current(path, tmp_path):
    for extra in ("nbformat", "nbclient", "ipykernel", "matplotlib"):
        pytest.importorskip(extra, reason="install the notebook extra: pip install -e '.[notebook]'")
    builder = _builder()
    stored = json.loads(path.read_text())
    t0, cpu0 = time.perf_counter(), _children_cpu()
    fresh = builder.execute(builder.strip_outputs(stored), str(tmp_path))  # raises naming a failing cell
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    images = _images(fresh)
    print(f"{path.name}: {seconds:.0f} s wall, {cpu:.0f} s CPU of the kernel, {len(images)} images")
    assert len(images) >= 2, f"{path.name} drew {len(images)} PNG images; its cells should show pictures"
    problems = builder.compare_outputs(stored, fresh)
    assert not problems, (f"{path.name}: the stored outputs are stale (run {REBUILD}):\n  "
                          + "\n  ".join(problems))


def test_notebooks_are_built_from_their_source_and_stored_with_pictures():
    """The .ipynb files equal what build_notebooks.py writes from the nb0*_*.py cell modules (edit
    those, not the JSON), outputs aside, and are stored with their outputs (pictures included)."""
    mod = _builder()
    assert sorted(mod.NOTEBOOKS) == [p.name for p in NOTEBOOKS]
    for name, cells in mod.NOTEBOOKS.items():
        on_disk = json.loads((NB_DIR / name).read_text())
        assert mod.strip_outputs(on_disk) == mod.to_ipynb(cells), \
            f"{name} is stale: run {REBUILD}"
        assert len(_images(on_disk)) >= 2, f"{name} is stored without its pictures: run {REBUILD}"
        code = [c for c in on_disk["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] is not None for c in code), \
            f"{name} has cells that were not run: run {REBUILD}"


def test_output_comparison_tolerates_noise_and_catches_stale_pictures():
    """compare_outputs: numbers in text, tiny pixel changes and prints split into several stream
    chunks pass; another picture, a missing output or other text fail."""
    np = pytest.importorskip("numpy")
    plt = pytest.importorskip("matplotlib.pyplot")
    import base64
    import io

    mod = _builder()

    def png(values):
        fig, ax = plt.subplots(figsize=(2, 2), dpi=50)
        ax.fill_between(np.arange(len(values)), values)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()

    def nb(text, image):
        outs = [{"output_type": "stream", "name": "stdout", "text": text},
                {"output_type": "display_data", "data": {"image/png": image, "text/plain": "<Figure>"},
                 "metadata": {}}]
        return {"cells": [{"cell_type": "code", "source": "x = 1", "outputs": outs}]}

    line = np.linspace(0, 1, 50)
    base = nb("loss 0.123 after 12 s\n", png(line))
    assert mod.compare_outputs(base, nb("loss 0.125 after 31 s\n", png(line + 1e-4))) == []
    assert mod.compare_outputs(base, nb("loss 0.123 after 12 s\n", png(-line ** 3)))
    assert mod.compare_outputs(base, nb("accuracy 0.123 after 12 s\n", png(line)))
    shorter = nb("loss 0.123 after 12 s\n", png(line))
    shorter["cells"][0]["outputs"].pop()
    assert mod.compare_outputs(base, shorter)
    # the kernel may flush one cell's prints in several chunks: same text, same outputs
    split = nb("loss 0.123 ", png(line))
    split["cells"][0]["outputs"].insert(1, {"output_type": "stream", "name": "stdout",
                                            "text": "after 12 s\n"})
    assert mod.compare_outputs(base, split) == []
    split["cells"][0]["outputs"][1]["text"] = "after 12 s, then more\n"
    assert mod.compare_outputs(base, split)
