"""Write the tutorial notebooks from their cell lists (keeps them reviewable as code), and run them
to store their outputs.

    python experiments/notebooks/build_notebooks.py              # sources only: keeps the stored
                                                                 # outputs of unchanged cells
    python experiments/notebooks/build_notebooks.py --execute    # run all, store outputs (~5 min)
    python experiments/notebooks/build_notebooks.py --execute 01 # only the notebooks named 01...
    python experiments/notebooks/build_notebooks.py --check      # run all, compare with stored

One module per notebook holds its cells, ``CELLS = [("md" | "code", source), ...]``, and its file
``NAME``: ``nb01_tour.py``, ``nb02_pretrained.py``, ``nb03_train.py``, ``nb04_conditional.py``. Edit
a module, run this script with ``--execute``, commit both. The notebooks are stored with their
outputs (pictures as PNGs, text; stderr dropped, the scratch folder written as
``$NOTEBOOK_WORKDIR``) so that a code host shows them. ``tests/test_notebooks.py`` executes each in
a fresh kernel (:func:`execute`) and checks that the stored sources equal what this script writes
and that the stored outputs are current (:func:`compare_outputs`: the same outputs per cell, images
within :data:`IMAGE_TOL` mean absolute difference, text equal up to its numbers).
``time_notebooks.py`` prints each cell's wall and kernel CPU seconds.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import io
import json
import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MODULES = ("nb01_tour", "nb02_pretrained", "nb03_train", "nb04_conditional")
CELL_TIMEOUT_S = 600
WORKDIR_MARK = "$NOTEBOOK_WORKDIR"
IMAGE_TOL = 0.03
"""Largest mean absolute difference (RGBA in [0, 1]) between a stored and a fresh picture: the
notebooks are seeded, so a rerun on the same machine draws the same pixels; the tolerance leaves
room for floating-point differences between machines."""
SIZE_TOL = 0.05
"""Largest relative difference of a picture's height or width (tick labels may differ)."""
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?")


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


def strip_outputs(nb: dict) -> dict:
    """A copy of notebook JSON ``nb`` without outputs and execution counts (its source part)."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    return nb


def execute(nb: dict, workdir: str) -> dict:
    """Notebook JSON ``nb`` run top to bottom in a fresh kernel (from the repository root, with
    ``NOTEBOOK_WORKDIR=workdir``, the inline matplotlib backend and ``HERE/matplotlibrc``: small
    pictures), its outputs cleaned as stored
    (:func:`clean_outputs`).  Raises ``CellExecutionError`` naming the cell when one raises."""
    import nbclient
    import nbformat

    node = nbformat.reads(json.dumps(nb), as_version=4)
    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "PYTHONPATH": str(ROOT),
           "NOTEBOOK_WORKDIR": str(workdir), "MATPLOTLIBRC": str(HERE / "matplotlibrc")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(node, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         record_timing=False,
                                         resources={"metadata": {"path": str(ROOT)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ran = json.loads(nbformat.writes(node))
    done = copy.deepcopy(nb)
    for cell, run in zip(done["cells"], ran["cells"]):
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = run["outputs"], run["execution_count"]
    return clean_outputs(done, str(workdir))


def small_png(b64) -> str:
    """The base64 PNG ``b64`` with a palette of 256 colours (a quarter of the bytes for plots)."""
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(_text(b64)))).convert("RGBA")
    out = io.BytesIO()
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode()


def clean_outputs(nb: dict, workdir: str) -> dict:
    """Drop stderr streams (warnings differ between machines); pictures as :func:`small_png`;
    write the scratch folder ``workdir`` as ``$NOTEBOOK_WORKDIR`` in text."""
    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        outs = [o for o in cell["outputs"] if not (o["output_type"] == "stream"
                                                   and o.get("name") == "stderr")]
        for o in outs:
            o.pop("metadata", None) if o["output_type"] == "stream" else None
            if "text" in o:
                o["text"] = _text(o["text"]).replace(workdir, WORKDIR_MARK)
            for mime, value in o.get("data", {}).items():
                if mime == "image/png":
                    o["data"][mime] = small_png(value)
                elif mime.startswith("text/"):
                    o["data"][mime] = _text(value).replace(workdir, WORKDIR_MARK)
        cell["outputs"] = coalesce_streams(outs)
    return nb


def coalesce_streams(outputs: list) -> list:
    """Consecutive outputs of one stream merged into one: the kernel flushes a cell's prints in
    as many chunks as timing gives, so their number is not part of what a cell printed."""
    merged = []
    for o in outputs:
        if (o["output_type"] == "stream" and merged and merged[-1]["output_type"] == "stream"
                and merged[-1].get("name") == o.get("name")):
            merged[-1] = {**merged[-1], "text": _text(merged[-1]["text"]) + _text(o["text"])}
        else:
            merged.append(o)
    return merged


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def _loose(text: str) -> str:
    """Text with its numbers masked and its whitespace collapsed."""
    return " ".join(_NUMBER.sub("#", text).split())


def _image(b64):
    """A base64 PNG as an RGBA float array in [0, 1]."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(_text(b64)))).convert("RGBA")
    return np.asarray(image, dtype=np.float64) / 255.0


def compare_images(stored: str, fresh: str) -> str | None:
    """Why two base64 PNGs differ beyond :data:`SIZE_TOL` / :data:`IMAGE_TOL`, or ``None``."""
    import numpy as np

    a, b = _image(stored), _image(fresh)
    if a.ndim != b.ndim or (a.ndim == 3 and a.shape[2] != b.shape[2]):
        return f"picture channels {a.shape} vs {b.shape}"
    if any(abs(p - q) > SIZE_TOL * max(p, q) for p, q in zip(a.shape[:2], b.shape[:2])):
        return f"picture size {a.shape[:2]} stored vs {b.shape[:2]} now"
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    diff = float(np.abs(a[:h, :w].astype(float) - b[:h, :w].astype(float)).mean())
    return None if diff <= IMAGE_TOL else f"picture differs: mean |difference| {diff:.3f} > {IMAGE_TOL}"


def compare_outputs(stored: dict, fresh: dict) -> list[str]:
    """The differences between the outputs of a stored and a freshly executed notebook: per code
    cell the same outputs (type, stream, MIME types), pictures by :func:`compare_images`, text up
    to its numbers.  Empty when the stored outputs are current."""
    problems = []
    cells = [(s, f) for s, f in zip(stored["cells"], fresh["cells"]) if s["cell_type"] == "code"]
    for k, (s, f) in enumerate(cells):
        where = f"code cell {k} ({_text(s['source']).splitlines()[0][:40]!r})"
        kinds = lambda outs: [(o["output_type"], o.get("name"), sorted(o.get("data", {})))
                              for o in outs]
        s_outs, f_outs = coalesce_streams(s["outputs"]), coalesce_streams(f["outputs"])
        if kinds(s_outs) != kinds(f_outs):
            problems.append(f"{where}: outputs {kinds(s_outs)} stored, {kinds(f_outs)} now")
            continue
        for so, fo in zip(s_outs, f_outs):
            if "text" in so and _loose(_text(so["text"])) != _loose(_text(fo["text"])):
                problems.append(f"{where}: text {_text(so['text'])[:200]!r} stored, "
                                f"{_text(fo['text'])[:200]!r} now")
            for mime, value in so.get("data", {}).items():
                if mime == "image/png":
                    why = compare_images(value, fo["data"][mime])
                    if why:
                        problems.append(f"{where}: {why}")
                elif mime.startswith("text/") and _loose(_text(value)) != _loose(_text(fo["data"][mime])):
                    problems.append(f"{where}: {mime} {_text(value)[:200]!r} stored, "
                                    f"{_text(fo['data'][mime])[:200]!r} now")
    return problems


def _with_kept_outputs(built: dict, old: dict | None) -> dict:
    """``built`` (no outputs) with the stored outputs of the code cells whose source is unchanged."""
    if old is None:
        return built
    for new, prev in zip(built["cells"], old["cells"]):
        if new["cell_type"] == "code" == prev["cell_type"] and new["source"] == prev["source"]:
            new["outputs"], new["execution_count"] = prev["outputs"], prev["execution_count"]
    return built


def write(name: str, nb: dict) -> None:
    (HERE / name).write_text(json.dumps(nb, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> int:
    mode = next((a for a in argv if a in ("--execute", "--check")), None)
    picks = [a for a in argv if not a.startswith("--")]
    failed = 0
    for name, cells in NOTEBOOKS.items():
        path = HERE / name
        old = json.loads(path.read_text()) if path.exists() else None
        chosen = not picks or any(name.startswith(p) for p in picks)
        if mode is None or not chosen:
            if mode is None:
                write(name, _with_kept_outputs(to_ipynb(cells), old))
                print("wrote", path)
            continue
        with tempfile.TemporaryDirectory() as workdir:
            fresh = execute(to_ipynb(cells), workdir)
        if mode == "--execute":
            write(name, fresh)
            print("executed and wrote", path)
        else:
            problems = compare_outputs(old, fresh) if old else ["not stored"]
            failed += bool(problems)
            print(name, "current" if not problems else "STALE:\n  " + "\n  ".join(problems))
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
