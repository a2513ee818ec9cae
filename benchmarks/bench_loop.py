"""Host overhead of the training loop and of the samplers: loop time / bare device time.

Training: the real :func:`scoresde_jax.training.train_loop` (Grain data pipeline, EMA in the step,
metric logging, periodic and preemption checkpoints through Orbax, the progress bar) on the small
MLP of ``configs/toy_8gaussians.py``, against the bare jitted train step dispatched back to back on
one device batch. The loop's per-step time is ``(T(2n) - T(n)) / n`` (two fresh workdirs, the
compiled step shared), so set-up and the final checkpoint cancel; the bare step is the mean of
``n`` dispatches with one block at the end. Goal: ratio <= 1.05.

Sampling: the library's snapshot sampler (``make_sample_fn``: ``pc_sample`` with Euler-Maruyama,
and the few-step DDIM / DPM-Solver++) against ``NFE`` network calls on the same batch in one jitted ``fori_loop`` (the device floor).

    .venv/bin/python benchmarks/bench_loop.py [--steps 100] [--batch 256] [--num_samples 1024]
        [--repeats 3] [--out benchmarks/results/bench_loop_<backend>.json]

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

from benchmarks.common import write_results  # noqa: E402
from scoresde_jax import config as C  # noqa: E402
from scoresde_jax import samplers  # noqa: E402
from scoresde_jax.parameterization import get_model_fn, get_score_fn  # noqa: E402
from scoresde_jax.training import distributed, make_train_fn, train_loop  # noqa: E402

CONFIG = "configs/toy_8gaussians.py"


def _train_config(batch: int, steps: int):
    cfg = C.load_config(CONFIG)
    t = cfg.training
    t.batch_size, t.n_iters, t.n_jitted_steps = batch, steps, 1
    t.log_freq, t.eval_freq = 50, 0
    t.snapshot_freq, t.snapshot_freq_for_preemption = 100, 50
    t.snapshot_sampling, t.keep_checkpoints = False, 2
    return cfg


def bare_step_s(fn, s, state, n: int) -> tuple[float, object]:
    """Mean time of ``n`` back-to-back dispatches of the compiled step on one device batch."""
    x = np.random.default_rng(0).standard_normal((1,) + s.input_shape, dtype=np.float32)
    xb = distributed.global_batch(x, s.mesh, leading=1)
    state, m = fn(state, xb)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(n):
        state, m = fn(state, xb)
    jax.block_until_ready((state, m))
    return (time.perf_counter() - t0) / n, state


def loop_s(fn, s, cfg, steps: int) -> float:
    """Wall time of a fresh ``train_loop`` of ``steps`` steps in a temporary workdir."""
    options = dataclasses.replace(C.loop_options(cfg), n_iters=steps)
    with tempfile.TemporaryDirectory() as workdir:
        it = C.get_dataset(cfg, split="train")
        t0 = time.perf_counter()
        train_loop(workdir, train_fn=fn, init_state=s.init_state,
                   abstract_state=s.abstract_state(), train_iter=it, mesh=s.mesh,
                   options=options, batch_size=s.input_shape[0],
                   preprocess=C.get_data_scaler(cfg), progress=True, description="bench")
        return time.perf_counter() - t0


def bench_training(steps: int, batch: int, repeats: int) -> dict:
    cfg = _train_config(batch, steps)
    s = C.setup(cfg)  # one setup: its optax chain is part of the step's cache key
    fn = make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh)
    t0 = time.perf_counter()
    loop_s(fn, s, cfg, 2)  # compiles the step (shared by every later loop)
    warm = time.perf_counter() - t0
    state = s.init_state()
    bares, loops = [], []
    for _ in range(repeats):  # alternate, so that load changes hit both alike
        b, state = bare_step_s(fn, s, state, steps)
        bares.append(b)
        loops.append((loop_s(fn, s, cfg, 2 * steps) - loop_s(fn, s, cfg, steps)) / steps)
    compiles = fn._cache_size()
    bare, loop = statistics.median(bares), statistics.median(loops)
    return {"case": "train_loop", "config": CONFIG, "batch": batch, "steps": steps,
            "bare_step_ms": round(bare * 1e3, 3), "loop_step_ms": round(loop * 1e3, 3),
            "ratio": round(loop / bare, 3), "all_bare_ms": [round(b * 1e3, 3) for b in bares],
            "all_loop_ms": [round(v * 1e3, 3) for v in loops], "first_loop_s": round(warm, 2),
            "train_step_compiles": compiles}


def bench_sampling(method: str, num_samples: int, num_steps: int, repeats: int) -> dict:
    cfg = C.load_config(CONFIG)
    cfg.sampling.method = method
    if method != "pc":
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
    def calls(p, x, t, n):  # n network calls in one program: the sampler's floor
        return jax.lax.fori_loop(0, n, lambda i, y: call(p, y, t), x)

    t0 = time.perf_counter()
    jax.block_until_ready(sample(params, jax.random.key(1)))
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
    return {"case": f"sample_{method}", "config": CONFIG, "batch": num_samples, "nfe": nfe,
            "net_call_ms": round(nm * 1e3, 3), "sampler_ms": round(sm * 1e3, 2),
            "ratio": round(sm / (nfe * nm), 3), "first_call_s": round(first, 2),
            "all_sampler_ms": [round(v * 1e3, 2) for v in samp],
            "sampler_compiles": sample._cache_size()}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--num_samples", type=int, default=1024)
    p.add_argument("--num_steps", type=int, default=10, help="few-step solvers' steps")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip_sampling", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.WARNING)
    rows = [bench_training(args.steps, args.batch, args.repeats)]
    if not args.skip_sampling:
        for method in ("pc", "ddim", "dpm_solver_pp"):
            rows.append(bench_sampling(method, args.num_samples, args.num_steps, args.repeats))
    print(f"\n{'case':22s} {'batch':>6s} {'bare ms':>10s} {'loop ms':>10s} {'ratio':>7s}  compiles")
    for r in rows:
        bare = r.get("bare_step_ms", r.get("net_call_ms"))
        per = r.get("loop_step_ms") or r["sampler_ms"] / r["nfe"]
        n = r.get("train_step_compiles", r.get("sampler_compiles"))
        print(f"{r['case']:22s} {r['batch']:6d} {bare:10.3f} {per:10.3f} {r['ratio']:7.3f}  {n}")
    summary = [{"metric": f"{r['case']} loop/bare", "value": r["ratio"], "goal": "<= 1.05"}
               for r in rows]
    write_results("bench_loop", rows, out=args.out, summary=summary, note=(
        "train_loop: per-step time (T(2n)-T(n))/n of the full loop (data, EMA, logs every 50, "
        "checkpoints every 50/100, progress bar) over the bare compiled step dispatched back to "
        "back; sample_*: make_sample_fn time over NFE network calls in one jitted fori_loop "
        "(the sampler's ms per NFE in the loop column)"))
    return rows


if __name__ == "__main__":
    main()
