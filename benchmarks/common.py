"""Shared benchmark helpers: trace/compile timing, device description, MFU and memory.

Every benchmark row built with :func:`compile_timed` carries ``trace_s``, ``lower_s`` and
``compile_s`` (``jit(f).trace``, ``.lower``, ``.compile``), the model FLOPs of the compiled program
from XLA's cost analysis, and its temporary (activation) memory; :func:`mfu` divides achieved
FLOP/s by the device's peak (:data:`PEAK_TFLOPS` by device kind; ``SCORESDE_PEAK_TFLOPS`` overrides,
and on CPU the peak is a measured float32 matmul throughput). The same code runs unchanged on CPU,
GPU and TPU.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

# Dense peak TFLOP/s per chip (bf16 / fp16 tensor cores; float32 matmuls on GPUs run at TF32 by
# default). Substrings of ``device.device_kind``; first match wins.
PEAK_TFLOPS = {
    "H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0, "V100": 125.0,
    "TPU v6": 918.0, "TPU v5p": 459.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v4": 275.0,
    "TPU v3": 123.0, "TPU v2": 45.0,
}


@functools.lru_cache(maxsize=1)
def cpu_matmul_tflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured float32 matmul throughput of this host (the CPU's practical 'peak')."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12


def peak_tflops(device: Any = None) -> tuple[float | None, str]:
    """``(peak TFLOP/s, source)`` of a device: the env override, the table or a CPU measurement."""
    device = device or jax.devices()[0]
    if os.environ.get("SCORESDE_PEAK_TFLOPS"):
        return float(os.environ["SCORESDE_PEAK_TFLOPS"]), "SCORESDE_PEAK_TFLOPS"
    kind = getattr(device, "device_kind", "")
    for key, value in PEAK_TFLOPS.items():
        if key.lower() in kind.lower():
            return value, f"table ({key})"
    if device.platform == "cpu":
        return round(cpu_matmul_tflops(), 4), "measured f32 matmul"
    return None, "unknown device kind"


def device_info() -> dict:
    """Backend, device kind and count, jax version, host and load: the ``meta`` of every JSON."""
    dev = jax.devices()[0]
    peak, source = peak_tflops(dev)
    return {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device_kind": getattr(dev, "device_kind", ""),
        "device_count": jax.device_count(),
        "peak_tflops": peak,
        "peak_source": source,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
    except Exception:  # backends without cost analysis
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def _temp_mib(compiled) -> float | None:
    try:
        return round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)
    except Exception:
        return None


def peak_memory_mib() -> float | None:
    """The device allocator's peak bytes in use (GPU/TPU; None on CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else round(peak / 2**20, 1)


def compile_timed(jitted: Callable, *args) -> tuple[Callable, dict]:
    """Trace, lower and compile ``jitted`` for ``args``; the compiled function and the timings."""
    t0 = time.perf_counter()
    traced = jitted.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    return compiled, {"trace_s": round(t1 - t0, 3), "lower_s": round(t2 - t1, 3),
                      "compile_s": round(t3 - t2, 3), "gflops": _gflops(compiled),
                      "temp_mib": _temp_mib(compiled)}


def trace_compile_s(info: dict) -> dict:
    """``{"trace_s": trace + lower, "compile_s": XLA compile}`` of a :func:`compile_timed` info:
    the two columns every benchmark row carries (issue 14)."""
    return {"trace_s": round(info["trace_s"] + info["lower_s"], 3), "compile_s": info["compile_s"]}


def round_program_timed(config: Any, *, batch_size: int, method: str | None = None,
                        nfe: int | None = None, seed: int = 0, **cond: Any) -> dict:
    """:func:`compile_timed` info of the sampling round that ``scoresde sample`` / ``scoresde
    eval`` jit (:func:`scoresde_jax.jobs.generate.make_generator`) for ``config`` with ``method``
    / ``nfe`` on ``batch_size`` samples and the conditioning ``cond`` (``classes``, ``guidance``,
    ``classifier``, ``classifier_scale``: :func:`scoresde_jax.config.conditioning`), traced on
    the abstract EMA parameters (shapes, dtypes and shardings: no checkpoint is read). The jobs
    compile the same program again themselves."""
    from scoresde_jax import config as config_lib
    from scoresde_jax.jobs.generate import image_keys, make_generator

    s = config_lib.setup(config)
    gen = make_generator(s, config_lib.sampler_spec(config, method, nfe), batch_size=batch_size,
                         cond=config_lib.conditioning(config, s, **cond))
    keys = image_keys(seed=seed, ids=range(batch_size))
    _, info = compile_timed(gen.jitted, *gen.args(s.abstract_state().ema_params, keys))
    return info


def _gflops(compiled) -> float | None:
    f = _flops(compiled)
    return None if f is None else round(f / 1e9, 3)


def time_calls(fn: Callable, *args, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median and all wall times of ``repeats`` blocking calls after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def mfu(gflops: float | None, seconds: float) -> float | None:
    """Model FLOPs utilization: ``gflops / seconds`` over the device's peak (all devices)."""
    peak, _ = peak_tflops()
    if gflops is None or peak is None or seconds <= 0:
        return None
    return round(gflops / seconds / (peak * 1e3 * jax.device_count()), 4)


def write_results(name: str, rows: list[dict], note: str, out: str | None = None,
                  summary: list[dict] | None = None) -> pathlib.Path:
    """Write ``{"meta", "rows", "summary"}`` to ``out`` or ``results/<name>_<backend>.json``.

    ``summary`` (a few ``{"metric", "value", ...}`` dicts) feeds ``run_all``'s summary table.
    """
    path = pathlib.Path(out) if out else RESULTS / f"{name}_{jax.default_backend()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"benchmark": name, **device_info(), "note": note}
    payload = {"meta": meta, "rows": rows}
    if summary is not None:
        payload["summary"] = summary
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path
