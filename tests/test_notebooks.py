"""The tutorial notebooks run top to bottom (slow: they sample with exact scores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = json.loads(path.read_text())
    namespace: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)


def test_notebooks_are_built_from_their_source():
    """The .ipynb files equal what build_notebooks.py writes (edit the builder, not the JSON)."""
    import importlib.util

    builder = NOTEBOOKS[0].parent / "build_notebooks.py"
    spec = importlib.util.spec_from_file_location("build_notebooks", builder)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, cells in mod.NOTEBOOKS.items():
        on_disk = json.loads((builder.parent / name).read_text())
        assert on_disk == mod.to_ipynb(cells), f"{name} is stale: run python {builder}"
