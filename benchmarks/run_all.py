"""Run every benchmark in turn (each prints its table and writes JSON to benchmarks/results/).

    python -m benchmarks.run_all [NAME ...]      # NAME in: samplers likelihood models train

Each benchmark runs in its own process so that one's compilation caches and thread pools do not skew another's
timings.  On a shared machine compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = {
    "samplers": "bench_samplers.py",
    "likelihood": "bench_likelihood.py",
    "models": "bench_models.py",
    "train": "bench_train.py",
}


def main(argv=None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    here = Path(__file__).resolve().parent
    failed = []
    for name in names:
        print(f"=== {name} ===", flush=True)
        if subprocess.call([sys.executable, str(here / BENCHMARKS[name])], cwd=here.parent) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
