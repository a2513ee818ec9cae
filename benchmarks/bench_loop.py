"""Host overhead of the training loop and of the samplers: loop time / bare device time.

Training: the real :func:`scoresde_jax.training.train_loop` (Grain data pipeline, EMA in the step,
metric logging, periodic and preemption checkpoints through Orbax, the progress bar) on the small
MLP of ``configs/toy_8gaussians.py``, against the bare jitted train step dispatched back to back on
one device batch. The loop's per-step time is taken over a window of steps between two of its
waits for the device (:func:`loop_step_s`), so set-up and teardown are left out while the logs and
a checkpoint save or two fall inside; the bare step is the mean of ``window`` dispatches with one
block at the end. ``save_ms`` is one save's blocking time, for other cadences: the loop adds
``save_ms / (checkpoint interval x step time)``. ``ratio`` is the median over the repeats of the
paired ratios. Goal: ratio <= 1.05.

Sampling: the library's snapshot sampler (``make_sample_fn``: ``pc_sample`` with Euler-Maruyama,
and the few-step DDIM / DPM-Solver++) against ``NFE`` network calls on the same batch in one jitted
``fori_loop`` (the device floor), with the time changing from call to call as in a sampler.

Two configs: the toy MLP (its bare step takes a few milliseconds, so host overhead shows most) and
the digits DDPM++ U-Net (a small image model). Every row records trace and compile seconds.

    .venv/bin/python benchmarks/bench_loop.py [--configs configs/toy_8gaussians.py ...]
        [--window W] [--batch B] [--num_samples N] [--repeats 3] [--skip_training]
        [--skip_sampling] [--out benchmarks/results/bench_loop_<backend>.json]

Runs unchanged on GPU/TPU. On a shared CPU compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import pathlib
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import compile_timed, mfu, write_results  # noqa: E402
from scoresde_jax import config as C  # noqa: E402
from scoresde_jax import samplers  # noqa: E402
from scoresde_jax.parameterization import get_model_fn, get_score_fn  # noqa: E402
from scoresde_jax.training import distributed, make_train_fn, train_loop  # noqa: E402
from scoresde_jax.training.checkpoint import Checkpointer  # noqa: E402
from scoresde_jax.training.host import _images, _with_labels  # noqa: E402

CONFIG = "configs/toy_8gaussians.py"


def _train_config(config: str, batch: int, window: int):
    """The loop's cadence: logs every 50 steps, a preemption checkpoint every ``window / 2`` and a
    snapshot every ``window`` steps; ``window + 100`` steps in all."""
    cfg = C.load_config(config)
    t = cfg.training
    t.batch_size, t.n_iters, t.n_jitted_steps = batch, window + 2 * WARM, 1
    t.log_freq, t.eval_freq = WARM, 0
    t.snapshot_freq, t.snapshot_freq_for_preemption = window, window // 2
    t.snapshot_sampling, t.keep_checkpoints = False, 2
    return cfg


WARM = 50  # steps before (and after) the timed window; the loop syncs at step 50 (a log)


def _loop_batch(cfg, s):
    """One dispatch's batches as the loop builds them (same pytree: the step compiles once)."""
    raw = next(C.get_dataset(cfg, split="train"))
    x = C.get_data_scaler(cfg)(_images(raw))[None]
    return distributed.global_batch(_with_labels(x, [raw]), s.mesh, leading=1)


def bare_step_s(fn, xb, state, n: int) -> tuple[float, object]:
    """Mean time of ``n`` back-to-back dispatches of the compiled step on one device batch."""
    state, m = fn(state, xb)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(n):
        state, m = fn(state, xb)
    jax.block_until_ready((state, m))
    return (time.perf_counter() - t0) / n, state


def loop_step_s(fn, s, cfg, window: int) -> float:
    """Per-step wall time of a fresh ``train_loop`` over its steady-state window.

    The loop waits for the device at every log (step 50, 100, ...), so the dispatch of step 51 and
    that of step ``51 + window`` both start right after such a wait: the time between them is the
    device work of ``window`` steps plus everything the loop adds (data, logs, the checkpoints at
    ``window / 2`` and ``window``, the progress bar), without set-up and teardown.
    """
    calls = []

    def timed(state, batch):
        calls.append(time.perf_counter())
        return fn(state, batch)

    with tempfile.TemporaryDirectory() as workdir:
        train_loop(workdir, train_fn=timed, init_state=s.init_state,
                   abstract_state=s.abstract_state(), train_iter=C.get_dataset(cfg, split="train"),
                   mesh=s.mesh, options=C.loop_options(cfg), batch_size=s.input_shape[0],
                   preprocess=C.get_data_scaler(cfg), progress=True, description="bench")
    return (calls[WARM + window] - calls[WARM]) / window


def save_ms(s, repeats: int = 3) -> float:
    """Blocking time of one checkpoint save (the rest is written in the background)."""
    state, times = s.init_state(), []
    with tempfile.TemporaryDirectory() as workdir:
        ckpt = Checkpointer(workdir, max_to_keep=2)
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            ckpt.save(i + 1, state, {"step": i + 1})
            times.append(time.perf_counter() - t0)
            ckpt.wait()  # as in the loop, where saves are far apart
        ckpt.close()
    return round(statistics.median(times[1:]) * 1e3, 1)


def _paired(loop: list[float], bare: list[float]) -> float:
    """Median over the repeats of loop / bare, each pair timed back to back (load changes on a
    shared machine hit both alike)."""
    return round(statistics.median(a / b for a, b in zip(loop, bare)), 3)


def bench_training(config: str, window: int, batch: int, repeats: int) -> dict:
    cfg = _train_config(config, batch, window)
    s = C.setup(cfg)  # one setup: its optax chain is part of the step's cache key
    fn = make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh)
    xb = _loop_batch(cfg, s)
    _, info = compile_timed(fn, s.init_state(), xb)  # trace / lower / compile, timed apart
    state = s.init_state()
    _, state = bare_step_s(fn, xb, state, 2)
    bares, loops = [], []
    for _ in range(repeats):  # alternate, so that load changes hit both alike
        b, state = bare_step_s(fn, xb, state, window)
        bares.append(b)
        loops.append(loop_step_s(fn, s, cfg, window))
    bare, loop = statistics.median(bares), statistics.median(loops)
    return {"case": "train_loop", "config": config, "batch": batch, "window": window,
            "bare_step_ms": round(bare * 1e3, 3), "loop_step_ms": round(loop * 1e3, 3),
            "ratio": _paired(loops, bares), "all_bare_ms": [round(b * 1e3, 3) for b in bares],
            "all_loop_ms": [round(v * 1e3, 3) for v in loops], "save_ms": save_ms(s),
            "trace_s": round(info["trace_s"] + info["lower_s"], 3),
            "compile_s": info["compile_s"], "gflops": info["gflops"],
            "mfu": mfu(info["gflops"], bare), "temp_mib": info["temp_mib"],
            "train_step_compiles": fn._cache_size()}


def bench_sampling(config: str, method: str, num_samples: int, num_steps: int,
                   pc_steps: int, repeats: int) -> dict:
    cfg = C.load_config(config)
    cfg.sampling.method = method
    if method == "pc":
        cfg.model.num_scales = pc_steps
    else:
        cfg.sampling.num_steps = num_steps
    s = C.setup(cfg)
    params = s.init_state().ema_params
    sample = C.make_sample_fn(cfg, s, num_samples=num_samples)
    shape = (num_samples,) + tuple(s.input_shape[1:])
    x = jax.random.normal(jax.random.key(0), shape)
    t = jax.numpy.full((num_samples,), 0.5)

    def call(p, x, t):
        return get_score_fn(s.sde, get_model_fn(s.model, p), continuous=s.continuous)(x, t)

    @functools.partial(jax.jit, static_argnums=3)
    def calls(p, x, t, n):
        # n network calls in one program, the sampler's floor. The time changes from call to call
        # as in a sampler: with a fixed t XLA hoists the time embedding out of the loop, which
        # is most of a small MLP's work (a floor 2-3x too low).
        return jax.lax.fori_loop(0, n, lambda i, y: call(p, y, t * (1.0 - i / (2 * n))), x)

    key = jax.random.key(1)
    _, info = compile_timed(sample, params, key)
    t0 = time.perf_counter()
    jax.block_until_ready(sample(params, key))
    first = time.perf_counter() - t0
    nfe = s.sde.N if method == "pc" else int(samplers.SAMPLERS[method](
        jax.tree_util.Partial(call, params), s.sde, shape, jax.random.key(1),
        num_steps=num_steps, eps=s.sampling_eps).nfe)
    jax.block_until_ready(calls(params, x, t, nfe))
    samp, net = [], []
    for r in range(repeats):  # alternate sampler and bare calls
        t0 = time.perf_counter()
        jax.block_until_ready(sample(params, jax.random.key(2 + r)))
        samp.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(calls(params, x, t, nfe))
        net.append((time.perf_counter() - t0) / nfe)
    sm, nm = statistics.median(samp), statistics.median(net)
    call_info = compile_timed(jax.jit(call), params, x, t)[1]  # one network call's FLOPs
    return {"case": f"sample_{method}", "config": config, "batch": num_samples, "nfe": nfe,
            "net_call_ms": round(nm * 1e3, 3), "sampler_ms": round(sm * 1e3, 2),
            "ratio": _paired(samp, [nfe * v for v in net]), "first_call_s": round(first, 2),
            "all_sampler_ms": [round(v * 1e3, 2) for v in samp],
            "all_net_call_ms": [round(v * 1e3, 3) for v in net],
            "trace_s": round(info["trace_s"] + info["lower_s"], 3),
            "compile_s": info["compile_s"], "temp_mib": info["temp_mib"],
            # XLA's cost analysis counts a loop body once: the FLOPs are NFE network calls
            "gflops": None if call_info["gflops"] is None else round(nfe * call_info["gflops"], 3),
            "mfu": None if call_info["gflops"] is None else mfu(nfe * call_info["gflops"], sm),
            "sampler_compiles": sample._cache_size()}


# Per config: (train batch, samples, PC steps). The toy MLP's bare step takes a few ms (host
# overhead shows most); the digits U-Net is a small image model whose network dominates.
# (train batch, timed window of steps, samples, PC levels)
SIZES = {"configs/toy_8gaussians.py": (256, 1000, 1024, 500),
         "configs/digits_ddpmpp.py": (32, 100, 64, 50)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=list(SIZES))
    p.add_argument("--window", type=int, default=None, help="timed loop steps (default: SIZES)")
    p.add_argument("--batch", type=int, default=None, help="train batch (default: SIZES)")
    p.add_argument("--num_samples", type=int, default=None, help="default: SIZES")
    p.add_argument("--pc_steps", type=int, default=None, help="PC levels (default: SIZES)")
    p.add_argument("--num_steps", type=int, default=10, help="few-step solvers' steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip_training", action="store_true")
    p.add_argument("--skip_sampling", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.WARNING)
    rows = []
    for config in args.configs:
        batch, window, num_samples, pc_steps = SIZES.get(config, (64, 200, 64, 100))
        batch, num_samples = args.batch or batch, args.num_samples or num_samples
        if not args.skip_training:
            rows.append(bench_training(config, args.window or window, batch, args.repeats))
        if not args.skip_sampling:
            for method in ("pc", "ddim", "dpm_solver_pp"):
                rows.append(bench_sampling(config, method, num_samples, args.num_steps,
                                           args.pc_steps or pc_steps, args.repeats))
    print(f"\n{'config':28s} {'case':22s} {'batch':>6s} {'bare ms':>9s} {'loop ms':>9s} "
          f"{'ratio':>6s} {'trace s':>8s} {'compile s':>9s} compiles")
    for r in rows:
        bare = r.get("bare_step_ms", r.get("net_call_ms"))
        per = r.get("loop_step_ms") or r["sampler_ms"] / r["nfe"]
        n = r.get("train_step_compiles", r.get("sampler_compiles"))
        print(f"{r['config']:28s} {r['case']:22s} {r['batch']:6d} {bare:9.3f} {per:9.3f} "
              f"{r['ratio']:6.3f} {r['trace_s']:8.2f} {r['compile_s']:9.2f} {n}")
    summary = [{"metric": f"{pathlib.Path(r['config']).stem} {r['case']} loop/bare",
                "value": r["ratio"], "goal": "<= 1.05", "trace_s": r["trace_s"],
                "compile_s": r["compile_s"]} for r in rows]
    write_results("bench_loop", rows, out=args.out, summary=summary, note=(
        "train_loop: per-step time of the full loop over a window of steps between two of its "
        "waits for the device (data prefetched in a thread, EMA, logs every 50, a preemption "
        "checkpoint and a snapshot in the window, progress bar) over the bare compiled step "
        "dispatched back to back on the same batch; save_ms: blocking time of one save; sample_*: make_sample_fn time over NFE "
        "network calls (the time changing from call to call) in one jitted fori_loop (the "
        "sampler's ms per NFE in the loop column); trace_s = trace + lower, compile_s = XLA "
        "compile of the train step / the sampler"))
    return rows


if __name__ == "__main__":
    main()
