"""Forward and forward+backward time of the paper's CIFAR-10 networks (NCSN++, DDPM++).

For each config: jit-compile the forward pass (``train=False``) and one gradient of a
denoising-score-matching-shaped loss (``train=True``, dropout on), then time ``--repeats`` calls
after a warm-up and report the median. Optionally bfloat16 compute and remat.

Prints a table and writes ``benchmarks/results/bench_models_<backend>.json``.

    .venv/bin/python benchmarks/bench_models.py [--batch 8] [--repeats 3]
        [--configs ve/cifar10_ncsnpp_continuous vp/cifar10_ddpmpp_continuous]
        [--dtypes float32 bfloat16] [--remat]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    compile_timed, mfu, peak_memory_mib, time_calls, write_results)
from scoresde_jax.config import load_config  # noqa: E402
from scoresde_jax.config import create_model, dummy_inputs, init_model  # noqa: E402
from scoresde_jax.models import count_params  # noqa: E402

DEFAULT_CONFIGS = ["ve/cifar10_ncsnpp_continuous", "vp/cifar10_ddpmpp_continuous"]


def _time(jitted, *args, repeats):
    """Trace, lower and compile ahead of time (timed apart), then time ``repeats`` calls."""
    t0 = time.perf_counter()
    fn, info = compile_timed(jitted, *args)
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    med, times = time_calls(fn, *args, repeats=repeats, warmup=0)
    return first, med, times, info


def inputs(config, batch, model):
    """``(x, labels, z)``: uniform images, noise levels across the range, the regression target."""
    x, labels = dummy_inputs(config, batch, model)
    x = jax.random.uniform(jax.random.key(1), x.shape)
    if labels.dtype == jnp.int32:
        labels = jnp.linspace(0, 999, batch).astype(jnp.float32)  # (N-1) t for VP
    else:
        labels = jnp.geomspace(0.01, 50.0, batch).astype(jnp.float32)  # sigma(t) for VE
    return x, labels, jax.random.normal(jax.random.key(2), x.shape)


def functions(model, z):
    """Jitted ``forward(p, x, labels)`` and ``forward_backward(p, x, labels, key)`` (value and
    gradient of ``mean((model(x) - z)^2)`` with dropout on)."""

    @jax.jit
    def forward(p, x, labels):
        return model.apply({"params": p}, x, labels, train=False)

    @jax.jit
    def forward_backward(p, x, labels, key):
        def loss(p):
            out = model.apply({"params": p}, x, labels, train=True, rngs={"dropout": key})
            return jnp.mean((out - z) ** 2)

        return jax.value_and_grad(loss)(p)

    return forward, forward_backward


def bench_one(name, batch, dtype, remat, repeats):
    config = load_config(f"configs/{name}.py")
    model = create_model(config, dtype=dtype, remat=remat)
    params = init_model(jax.random.key(0, impl="unsafe_rbg"), config, dtype=dtype, remat=remat)
    x, labels, z = inputs(config, batch, model)
    forward, forward_backward = functions(model, z)
    f_first, f_med, f_all, f_info = _time(forward, params, x, labels, repeats=repeats)
    b_first, b_med, b_all, b_info = _time(forward_backward, params, x, labels, jax.random.key(3),
                                          repeats=repeats)
    return {
        "config": name,
        "model": config.model.name,
        "params": count_params(params),
        "batch": batch,
        "image": [config.data.image_size, config.data.image_size, config.data.num_channels],
        "dtype": dtype,
        "remat": remat,
        "forward_compile_and_first_s": round(f_first, 3),
        "forward_s": round(f_med, 4),
        "forward_all_s": [round(t, 4) for t in f_all],
        "forward_images_per_s": round(batch / f_med, 2),
        "forward_temp_mib": f_info["temp_mib"],
        "forward_trace_s": f_info["trace_s"] + f_info["lower_s"],
        "forward_compile_s": f_info["compile_s"],
        "forward_gflops": f_info["gflops"],
        "forward_mfu": mfu(f_info["gflops"], f_med),
        "fwd_bwd_compile_and_first_s": round(b_first, 3),
        "fwd_bwd_s": round(b_med, 4),
        "fwd_bwd_all_s": [round(t, 4) for t in b_all],
        "fwd_bwd_images_per_s": round(batch / b_med, 2),
        "fwd_bwd_temp_mib": b_info["temp_mib"],
        "fwd_bwd_trace_s": b_info["trace_s"] + b_info["lower_s"],
        "fwd_bwd_compile_s": b_info["compile_s"],
        "fwd_bwd_gflops": b_info["gflops"],
        "fwd_bwd_mfu": mfu(b_info["gflops"], b_med),
        "peak_memory_mib": peak_memory_mib(),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--remat", action="store_true", help="also time remat=True")
    parser.add_argument("--out", default=None, help="output JSON (default results/...)")
    args = parser.parse_args(argv)

    rows = []
    print(f"{'config':34s} {'dtype':9s} {'remat':5s} {'params':>11s} {'fwd s':>8s} "
          f"{'fwd+bwd s':>10s} {'MFU':>6s} {'bwd MiB':>8s} {'trace s':>8s} {'compile s':>10s}")
    for name in args.configs:
        for dtype in args.dtypes:
            for remat in ([False, True] if args.remat else [False]):
                r = bench_one(name, args.batch, dtype, remat, args.repeats)
                rows.append(r)
                trace_s = r["forward_trace_s"] + r["fwd_bwd_trace_s"]
                compile_s = r["forward_compile_s"] + r["fwd_bwd_compile_s"]
                print(f"{name:34s} {dtype:9s} {str(remat):5s} {r['params']:>11,d} "
                      f"{r['forward_s']:8.3f} {r['fwd_bwd_s']:10.3f} "
                      f"{r['fwd_bwd_mfu'] or float('nan'):6.3f} "
                      f"{r['fwd_bwd_temp_mib'] or float('nan'):8.0f} {trace_s:8.1f} "
                      f"{compile_s:10.1f}", flush=True)
    summary = [{"metric": f"{r['config'].split('/')[-1]} {r['dtype']} remat={r['remat']} "
                          f"fwd+bwd s (batch {r['batch']})", "value": r["fwd_bwd_s"],
                "mfu": r["fwd_bwd_mfu"], "temp_mib": r["fwd_bwd_temp_mib"],
                "compile_s": r["fwd_bwd_compile_s"]} for r in rows]
    write_results("bench_models", rows, out=args.out, summary=summary, note=(
        "median of repeats after one call; loss = mean((model(x) - z)^2); *_trace_s: jit trace + "
        "lower, *_compile_s: XLA compile; *_mfu: XLA cost-analysis FLOPs / time / peak; "
        "*_temp_mib: XLA temporary buffers of the compiled program (activation memory); "
        "peak_memory_mib: the device allocator's peak (GPU/TPU)"))


if __name__ == "__main__":
    main()
