"""Run every benchmark in turn, then print one summary table of all of them (also written as markdown
to ``benchmarks/results/SUMMARY.md``).

    python -m benchmarks.run_all [NAME ...]      # NAME in: loop samplers likelihood models
                                                 #   models_vs_baseline train inception startup
                                                 #   sampler_family
    python -m benchmarks.run_all --summary-only  # the table of the JSON files already in results/

Each benchmark runs in its own process (its default, small sizes) so that one's compilation caches
and thread pools do not skew another's timings, prints its own table and writes JSON to
``benchmarks/results/``. On a shared machine compare ratios within one run, not absolute numbers
across runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BENCHMARKS = {  # name -> (script, prefix of its JSON file in results/)
    "loop": ("bench_loop.py", "bench_loop"),
    "samplers": ("bench_samplers.py", "bench_samplers"),
    "likelihood": ("bench_likelihood.py", "bench_likelihood"),
    "models": ("bench_models.py", "bench_models"),
    "models_vs_baseline": ("bench_models_vs_baseline.py", "bench_models_vs_baseline"),
    "train": ("bench_train.py", "bench_train"),
    "inception": ("bench_inception.py", "bench_inception"),
    "startup": ("bench_startup.py", "bench_startup"),
    "sampler_family": ("bench_sampler_family.py", "bench_sampler_family"),
}
LABEL_KEYS = ("case", "config", "way", "cache", "nfe_budget", "sampler", "setting", "method", "name", "preprocess", "dim",
              "divergence", "dtype", "remat", "devices", "batch")
MAX_ROWS = 12  # per benchmark in the summary; the JSON has them all
METRIC_KEYS = ("first_step_s", "worst", "median", "worst_kept", "ratio", "mfu", "step_s", "fwd_bwd_s", "forward_s", "run_s", "sampler_ms",
               "images_per_s", "trace_s", "compile_s", "trace_compile_s", "compile_and_first_s",
               "memory_mib", "temp_mib", "bpd_err_abs_max", "fid", "swd", "nfe", "us_per_nfe",
               "seconds", "error")


def _latest(prefix: str) -> Path | None:
    longer = [p for _, p in BENCHMARKS.values() if p != prefix and p.startswith(prefix)]
    files = sorted((f for f in RESULTS.glob(f"{prefix}*.json")
                    if not any(f.name.startswith(p) for p in longer)),
                   key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _rows(payload: dict) -> list[dict]:
    if isinstance(payload.get("rows"), list):
        return payload["rows"]
    rows = []
    for key, value in payload.items():  # benchmarks with several tables
        if key != "meta" and isinstance(value, list):
            rows += [dict(table=key, **r) for r in value if isinstance(r, dict)]
    return rows


def summarize(names: list[str], since: float | None = None) -> list[list[str]]:
    """``[benchmark, device, row, metrics, file]`` lines of the newest JSON of each benchmark."""
    lines = []
    for name in names:
        path = _latest(BENCHMARKS[name][1])
        if path is None or (since is not None and path.stat().st_mtime < since):
            lines.append([name, "", "", "no result written", ""])
            continue
        payload = json.loads(path.read_text())
        meta = payload.get("meta", {})
        device = meta.get("device_kind") or meta.get("backend") or meta.get("machine", "")
        if payload.get("summary"):
            for s in payload["summary"]:
                extra = ", ".join(f"{k} {_fmt(v)}" for k, v in s.items()
                                  if k not in ("metric", "value"))
                lines.append([name, str(device), s["metric"],
                              f"{_fmt(s['value'])}" + (f" ({extra})" if extra else ""), path.name])
            continue
        rows = _rows(payload)
        for r in rows[:MAX_ROWS]:
            label = " ".join(f"{_fmt(r[k])}" for k in ("table",) + LABEL_KEYS
                             if k in r and not isinstance(r[k], (list, dict)))
            metrics = ", ".join(f"{k} {_fmt(r[k])}" for k in METRIC_KEYS
                                if k in r and r[k] is not None)
            lines.append([name, str(device), label, metrics, path.name])
        if len(rows) > MAX_ROWS:
            more = f"... {len(rows) - MAX_ROWS} more rows"
            lines.append([name, str(device), more, "", path.name])
    return lines


def write_summary(lines: list[list[str]]) -> Path:
    header = ["benchmark", "device", "row", "result", "file"]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h)
              for i, h in enumerate(header)]
    print("\n=== summary ===")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    md = ["# Benchmark summary", "", f"Written {when} "
          "by `python -m benchmarks.run_all`; the JSON files hold every number.", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "/") for c in line) + " |" for line in lines]
    path = RESULTS / "SUMMARY.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(md) + "\n")
    print(f"wrote {path}")
    return path


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    summary_only = "--summary-only" in args
    names = [a for a in args if a != "--summary-only"] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed, start = [], time.time()
    if not summary_only:
        for name in names:
            print(f"=== {name} ===", flush=True)
            if subprocess.call([sys.executable, str(HERE / BENCHMARKS[name][0])],
                               cwd=HERE.parent) != 0:
                failed.append(name)
    write_summary(summarize(names, since=None if summary_only else start))
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
