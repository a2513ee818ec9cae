"""Time each notebook cell by cell: wall seconds and the kernel's CPU seconds (user + sys).

    nice -n 15 .venv/bin/python experiments/notebooks/time_notebooks.py [01 02 ...] [--out DIR]

(``--out DIR`` keeps the executed notebooks, with their outputs, in DIR.)

The machine is shared, so the kernel's CPU seconds (``time.process_time()`` inside the kernel, all its
threads) are the fairer number; wall seconds grow with the load. Each notebook runs in a fresh kernel as
in ``tests/test_notebooks.py``; after every code cell a probe cell prints the kernel's CPU time.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PROBE = "import time as _t; print('__cpu__', _t.process_time())"


def time_notebook(path: Path, out_dir: Path | None = None) -> tuple[float, float, list]:
    """Returns (wall s, kernel CPU s, [(first line, wall s, CPU s) per code cell]); with ``out_dir``
    the executed notebook (probe cells removed) is written there, outputs included."""
    nb = nbformat.read(path, as_version=4)
    cells, heads = [], []
    for cell in nb.cells:
        cells.append(cell)
        if cell.cell_type == "code":
            heads.append(cell.source.splitlines()[0][:60])
            cells.append(nbformat.v4.new_code_cell(PROBE))
    nb.cells = cells
    walls: list[float] = []
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.on_cell_executed = lambda **kw: walls.append(time.perf_counter())
    os.environ.update({"MPLBACKEND": "module://matplotlib_inline.backend_inline",
                       "PYTHONPATH": str(ROOT), "NOTEBOOK_WORKDIR": tempfile.mkdtemp()})
    t0 = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - t0
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        done = nbformat.from_dict(nb)
        done.cells = [c for c in done.cells if c.source != PROBE]
        nbformat.write(done, out_dir / path.name)
    cpus = [float(out["text"].split()[1]) for cell in nb.cells if cell.source == PROBE
            for out in cell.outputs if "__cpu__" in out.get("text", "")]
    rows, prev_cpu, prev_wall = [], 0.0, t0
    for i, head in enumerate(heads):
        end = walls[2 * i] if 2 * i < len(walls) else prev_wall
        rows.append((head, end - prev_wall, cpus[i] - prev_cpu))
        prev_cpu, prev_wall = cpus[i], walls[2 * i + 1] if 2 * i + 1 < len(walls) else end
    return wall, cpus[-1], rows


def main(argv: list[str]) -> None:
    out_dir = None
    if "--out" in argv:
        i = argv.index("--out")
        out_dir, argv = Path(argv[i + 1]), argv[:i] + argv[i + 2:]
    paths = sorted(HERE.glob("*.ipynb"))
    if argv:
        paths = [p for p in paths if any(p.name.startswith(a) for a in argv)]
    for path in paths:
        wall, cpu, rows = time_notebook(path, out_dir)
        print(f"\n{path.name}: {wall:.0f} s wall, {cpu:.0f} s kernel CPU")
        for head, w, c in rows:
            print(f"  {w:6.1f} s wall {c:6.1f} s CPU  {head}")
        print(f"  load average: {os.getloadavg()}")


if __name__ == "__main__":
    main(sys.argv[1:])
