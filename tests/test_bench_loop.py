"""Issue 14: ``benchmarks/bench_loop.py``'s training rows on tiny settings: the shared row, and the
pinned row of its subprocess (XLA on one core, host threads on the others), whose device-core
time split must be measured from the kernel's per-thread accounting, not left empty."""

from __future__ import annotations

import os

from benchmarks import bench_loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "toy_8gaussians.py")


def _common(row: dict) -> None:
    assert row["bare_step_ms"] > 0 and row["loop_step_ms"] > 0 and row["ratio"] > 0, row
    assert row["train_step_compiles"] == 1, row  # the loop reuses the benchmark's compiled step
    assert row["save_ms"] > 0 and row["save_cpu_ms"] > 0, row
    assert row["trace_s"] > 0 and row["compile_s"] > 0, row
    assert row["process_cpu_ms"] > 0, row


_PIN = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def test_training_row_pinned_splits_the_device_core_time():
    """The pinned row (a subprocess running ``bench_training`` as the shared row does, with XLA's
    threads on one core); without Linux affinity or a second core, the shared row itself."""
    if not _PIN:
        row = bench_loop.bench_training(TOY, window=200, batch=64, repeats=1)
        assert row["case"] == "train_loop" and "device_idle" not in row
        _common(row)
        return
    (row,) = bench_loop._pinned_rows(TOY, 200, 64, 1)
    assert row["case"] == "train_loop_pinned" and "core" in row["layout"]
    _common(row)
    for prefix in ("", "bare_"):
        busy, idle, out = (row[f"{prefix}device_{k}"] for k in ("busy", "idle", "outside"))
        # /proc/stat counts in 10 ms ticks: a window of ~0.2 s is good to about 5 %
        assert 0 < busy <= 1.05 and 0 <= idle <= 1.1 and 0 <= out <= 1, row  # XLA ran there
    assert row["device_cpu_ms"] > 0 and row["host_cpu_ms"] > 0 and row["loop_over_device"] >= 0.9, row
