"""Write the tutorial notebooks from their cell lists (keeps them reviewable as code).

    python experiments/notebooks/build_notebooks.py

One module per notebook holds its cells, ``CELLS = [("md" | "code", source), ...]``, and its file
``NAME``: ``nb01_tour.py``, ``nb02_pretrained.py``, ``nb03_train.py``, ``nb04_conditional.py``. Edit
a module, run this script, commit both. The notebooks are stored without outputs;
``tests/test_notebooks.py`` executes each in a fresh kernel (small sizes, each well under a minute of
CPU) and checks that it draws images and that the stored files equal what this script writes.
``time_notebooks.py`` prints each cell's wall and kernel CPU seconds.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULES = ("nb01_tour", "nb02_pretrained", "nb03_train", "nb04_conditional")


def _load(name: str):
    """The module ``HERE/<name>.py`` (by path: works from any working directory)."""
    spec = importlib.util.spec_from_file_location(f"notebook_cells_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NOTEBOOKS = {mod.NAME: mod.CELLS for mod in map(_load, MODULES)}


def to_ipynb(cells) -> dict:
    """nbformat 4.5 JSON of ``[(kind, source), ...]`` without outputs (cell ids ``cell-<i>``)."""
    out = []
    for kind, src in cells:
        if kind not in ("md", "code"):
            raise ValueError(f"cell kind must be 'md' or 'code', got {kind!r}")
        lines = src.splitlines(keepends=True)
        if kind == "md":
            out.append({"cell_type": "markdown", "id": f"cell-{len(out)}", "metadata": {},
                        "source": lines})
        else:
            out.append({"cell_type": "code", "id": f"cell-{len(out)}", "metadata": {},
                        "execution_count": None, "outputs": [], "source": lines})
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"},
                                       "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        (HERE / name).write_text(json.dumps(to_ipynb(cells), indent=1) + "\n")
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
