"""The score network now vs. the same network at an earlier git revision, timed interleaved.

The ``scoresde_jax/models`` package at ``--baseline`` (default ``414d3e4^``, before the custom
``Conv``) is extracted with ``git archive`` into a temporary directory and imported as
``scoresde_models_baseline`` (its ``scoresde_jax.models`` imports rewritten), then built with the
same module attributes and run on the same parameters (parameter names and shapes are unchanged).
Both variants are compiled ahead of time, then called alternately (forward, forward+backward;
the order swapped every round) for ``--rounds`` rounds: on a shared, noisy machine the medians of
interleaved calls compare the two codes under the same load; the process CPU seconds of each call
are reported too (``*_cpu_s``), which other processes' load disturbs less than wall time. The forward outputs, losses and
gradients of the two are compared as well.

Prints a table and writes ``benchmarks/results/bench_models_vs_baseline_<backend>.json``.

    .venv/bin/python benchmarks/bench_models_vs_baseline.py [--baseline 414d3e4^] [--rounds 5]
        [--config ve/cifar10_ncsnpp_continuous] [--batch 8] [--dtype float32]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_models import functions, inputs  # noqa: E402
from benchmarks.common import compile_timed, mfu, write_results  # noqa: E402
from scoresde_jax.config import load_config  # noqa: E402
from scoresde_jax.config import create_model, init_model  # noqa: E402
from scoresde_jax.models import count_params  # noqa: E402

BASELINE_PKG = "scoresde_models_baseline"


def baseline_models(rev: str):
    """``scoresde_jax/models`` at git revision ``rev``, imported as ``scoresde_models_baseline``."""
    r = subprocess.run(["git", "archive", rev, "scoresde_jax/models"], cwd=ROOT,
                       capture_output=True)
    if r.returncode:
        raise SystemExit(f"git archive {rev} failed: {r.stderr.decode().strip()}")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_models_baseline_"))
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        tar.extractall(tmp, filter="data")
    pkg = tmp / BASELINE_PKG
    (tmp / "scoresde_jax" / "models").rename(pkg)
    for path in pkg.glob("*.py"):
        text = re.sub(r"\bscoresde_jax\.models\b", BASELINE_PKG, path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(tmp))
    return importlib.import_module(BASELINE_PKG)


def same_module(model, pkg):
    """The class of the same name in ``pkg`` with ``model``'s attributes."""
    cls = getattr(pkg, type(model).__name__)
    kw = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
          if f.init and f.name not in ("parent", "name")}
    return cls(**kw)


def _call(fn, args):
    """Wall seconds and process CPU seconds (all threads) of one blocking call."""
    c0, t0 = time.process_time(), time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, time.process_time() - c0


def _max_rel(a, b):
    """max |a - b| / max |b| over all leaves (one number), and max |a - b|."""
    diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                             jax.tree.leaves(b)))
    scale = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(b))
    return diff / scale, diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="414d3e4^", help="git revision of the baseline")
    parser.add_argument("--config", default="ve/cifar10_ncsnpp_continuous")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None, help="output JSON (default results/...)")
    args = parser.parse_args(argv)

    old_pkg = baseline_models(args.baseline)
    config = load_config(str(ROOT / f"configs/{args.config}.py"))
    model = create_model(config, dtype=args.dtype)
    models = {"baseline": same_module(model, old_pkg), "current": model}
    params = init_model(jax.random.key(0, impl="unsafe_rbg"), config, dtype=args.dtype)
    x, labels, z = inputs(config, args.batch, model)
    fargs = (params, x, labels)
    bargs = (params, x, labels, jax.random.key(3))

    compiled, info, outs = {}, {}, {}
    for name, m in models.items():
        f, fb = functions(m, z)
        cf, fi = compile_timed(f, *fargs)
        cb, bi = compile_timed(fb, *bargs)
        compiled[name], info[name] = (cf, cb), (fi, bi)
        outs[name] = (cf(*fargs), cb(*bargs))  # also the warm-up calls
        jax.block_until_ready(outs[name])

    out_rel, out_abs = _max_rel(outs["current"][0], outs["baseline"][0])
    loss_rel, _ = _max_rel(outs["current"][1][0], outs["baseline"][1][0])
    grad_rel, grad_abs = _max_rel(outs["current"][1][1], outs["baseline"][1][1])
    per_leaf = max(_max_rel(a, b)[0] for a, b in zip(jax.tree.leaves(outs["current"][1][1]),
                                                     jax.tree.leaves(outs["baseline"][1][1]))
                   if float(jnp.max(jnp.abs(b))) > 0)
    del outs

    times = {name: {"forward": [], "fwd_bwd": []} for name in models}
    cpu = {name: {"forward": [], "fwd_bwd": []} for name in models}
    loads = [os.getloadavg()[0]]
    order = list(models)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            for i, kind in enumerate(("forward", "fwd_bwd")):
                wall, cpu_s = _call(compiled[name][i], fargs if i == 0 else bargs)
                times[name][kind].append(wall)
                cpu[name][kind].append(cpu_s)
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds}: " + "  ".join(
            f"{n} fwd {t['forward'][-1]:.3f} s fwd+bwd {t['fwd_bwd'][-1]:.3f} s"
            for n, t in times.items()) + f"  load {loads[-1]:.1f}", flush=True)

    rows = []
    base = {k: float(np.median(v)) for k, v in times["baseline"].items()}
    base_cpu = {k: float(np.median(v)) for k, v in cpu["baseline"].items()}
    for name in models:
        fi, bi = info[name]
        med = {k: float(np.median(v)) for k, v in times[name].items()}
        med_cpu = {k: float(np.median(v)) for k, v in cpu[name].items()}
        rows.append({
            "variant": name,
            "code": args.baseline if name == "baseline" else "working tree",
            "config": args.config, "batch": args.batch, "dtype": args.dtype,
            "params": count_params(params),
            "forward_s": round(med["forward"], 4),
            "forward_all_s": [round(t, 4) for t in times[name]["forward"]],
            "forward_ratio": round(med["forward"] / base["forward"], 3),
            "fwd_bwd_s": round(med["fwd_bwd"], 4),
            "fwd_bwd_all_s": [round(t, 4) for t in times[name]["fwd_bwd"]],
            "fwd_bwd_ratio": round(med["fwd_bwd"] / base["fwd_bwd"], 3),
            "forward_cpu_s": round(med_cpu["forward"], 4),
            "forward_cpu_ratio": round(med_cpu["forward"] / base_cpu["forward"], 3),
            "fwd_bwd_cpu_s": round(med_cpu["fwd_bwd"], 4),
            "fwd_bwd_cpu_all_s": [round(t, 4) for t in cpu[name]["fwd_bwd"]],
            "fwd_bwd_cpu_ratio": round(med_cpu["fwd_bwd"] / base_cpu["fwd_bwd"], 3),
            "forward_trace_s": round(fi["trace_s"] + fi["lower_s"], 3),
            "forward_compile_s": fi["compile_s"],
            "fwd_bwd_trace_s": round(bi["trace_s"] + bi["lower_s"], 3),
            "fwd_bwd_compile_s": bi["compile_s"],
            "forward_temp_mib": fi["temp_mib"], "fwd_bwd_temp_mib": bi["temp_mib"],
            "forward_mfu": mfu(fi["gflops"], med["forward"]),
            "fwd_bwd_mfu": mfu(bi["gflops"], med["fwd_bwd"]),
        })
    diffs = {"forward_max_abs": out_abs, "forward_max_rel_to_max": out_rel,
             "loss_rel": loss_rel, "grad_max_abs": grad_abs, "grad_max_rel_to_max": grad_rel,
             "grad_max_rel_per_leaf": per_leaf}
    print(f"\n{args.config} batch {args.batch} {args.dtype}, {args.rounds} interleaved rounds, "
          f"load {min(loads):.1f}-{max(loads):.1f}")
    print(f"{'variant':9s} {'fwd s':>8s} {'ratio':>6s} {'fwd+bwd s':>10s} {'ratio':>6s} "
          f"{'cpu s':>8s} {'ratio':>6s} {'bwd MiB':>8s} {'trace s':>8s} {'compile s':>10s}")
    for r in rows:
        print(f"{r['variant']:9s} {r['forward_s']:8.3f} {r['forward_ratio']:6.3f} "
              f"{r['fwd_bwd_s']:10.3f} {r['fwd_bwd_ratio']:6.3f} "
              f"{r['fwd_bwd_cpu_s']:8.3f} {r['fwd_bwd_cpu_ratio']:6.3f} "
              f"{r['fwd_bwd_temp_mib'] or float('nan'):8.0f} "
              f"{r['forward_trace_s'] + r['fwd_bwd_trace_s']:8.1f} "
              f"{r['forward_compile_s'] + r['fwd_bwd_compile_s']:10.1f}")
    print("current vs baseline: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    cur = rows[-1]
    summary = [{"metric": f"{args.config.split('/')[-1]} fwd+bwd vs {args.baseline} (ratio)",
                "value": cur["fwd_bwd_ratio"], "cpu_ratio": cur["fwd_bwd_cpu_ratio"],
                "fwd_bwd_s": cur["fwd_bwd_s"],
                "baseline_fwd_bwd_s": rows[0]["fwd_bwd_s"], "temp_mib": cur["fwd_bwd_temp_mib"]}]
    write_results("bench_models_vs_baseline", rows, out=args.out, summary=summary, note=(
        f"baseline: scoresde_jax/models at git {args.baseline}; {args.rounds} rounds of "
        "alternating calls (order swapped each round), medians; ratio = current / baseline; "
        "*_cpu_s: process CPU seconds of the call (all threads; less sensitive to other load); "
        f"load average 1m over the rounds {min(loads):.1f}-{max(loads):.1f}; diffs: current vs "
        f"baseline {diffs}"))


if __name__ == "__main__":
    main()
