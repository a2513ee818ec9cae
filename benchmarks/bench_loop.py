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

Sampling: the library's one sampling round (:func:`scoresde_jax.jobs.generate.make_generator`, as
training snapshots, ``scoresde sample`` and ``scoresde eval`` jit it: ``pc_sample`` with
Euler-Maruyama, and the few-step DDIM / DPM-Solver++) against ``NFE`` network calls on the same batch in one jitted
``fori_loop`` (the device floor), with the time changing from call to call as in a sampler.

Two configs: the toy MLP (its bare step takes a few milliseconds, so host overhead shows most) and
the digits DDPM++ U-Net (a small image model). Every row records trace and compile seconds.

On a CPU backend the "device" is the host's own cores, so every thread of the loop (the prefetch
thread, Orbax's background commit, Grain) takes time from the step, which a GPU/TPU host does not.
The training rows therefore run twice there: ``train_loop`` with XLA on all cores (shared), and
``train_loop_pinned`` (``--pin``, a subprocess) with XLA's threads on the first core and every host
thread on the others, the layout of an accelerator host; the bare step is timed under the same
pinning. Pinned rows split the window's wall time on the device core into ``device_busy`` (XLA's
threads ran: their ``schedstat``), ``device_idle`` (the core ran nothing: ``/proc/stat``; XLA had
no work because the host fell behind, the overhead this benchmark is after) and ``device_outside``
(the rest: other processes and the kernel on that core), for the loop and (``bare_*``) the bare
step, with the CPU ms per step of the device's threads and of the host's (``device_cpu_ms`` /
``host_cpu_ms``). ``loop_over_device`` is the loop's wall time over the time XLA ran in that
same window: the host overhead without the drift of the bare step between runs (on a shared VM
the bare step's own time varies 10-20 % from run to run).
``save_cpu_ms`` is the CPU time of one save in all (Orbax's background commit included).

    .venv/bin/python benchmarks/bench_loop.py [--configs configs/toy_8gaussians.py ...]
        [--window W] [--batch B] [--num_samples N] [--repeats 3] [--skip_training]
        [--skip_sampling] [--no_pinned] [--no_saves] [--out benchmarks/results/bench_loop_<backend>.json]

Runs unchanged on GPU/TPU. On a shared CPU compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import compile_timed, mfu, write_results  # noqa: E402
from benchmarks.cpu_layout import (  # noqa: E402
    device_fractions, device_sched_s, pin_device_core, process_cpu_s)
from scoresde_jax import config as C  # noqa: E402
from scoresde_jax import samplers  # noqa: E402
from scoresde_jax.jobs.generate import make_generator  # noqa: E402
from scoresde_jax.parameterization import get_model_fn, get_score_fn  # noqa: E402
from scoresde_jax.training import distributed, make_train_fn, train_loop  # noqa: E402
from scoresde_jax.training.checkpoint import Checkpointer  # noqa: E402
from scoresde_jax.training.host import image_batch, with_labels  # noqa: E402

CONFIG = "configs/toy_8gaussians.py"


SAVES = True  # --no_saves: no checkpoint in the timed window (to separate the saves' share)


def _train_config(config: str, batch: int, window: int):
    """The loop's cadence: logs every 50 steps, a preemption checkpoint every ``window / 2`` and a
    snapshot every ``window`` steps (none with ``--no_saves``); ``window + 100`` steps in all."""
    cfg = C.load_config(config)
    t = cfg.training
    t.batch_size, t.n_iters, t.n_jitted_steps = batch, window + 2 * WARM, 1
    t.log_freq, t.eval_freq = WARM, 0
    t.snapshot_freq, t.snapshot_freq_for_preemption = ((window, window // 2) if SAVES
                                                       else (10 * window, 0))
    t.snapshot_sampling, t.keep_checkpoints = False, 2
    return cfg


WARM = 50  # steps before (and after) the timed window; the loop syncs at step 50 (a log)


def _loop_batch(cfg, s):
    """One dispatch's batches as the loop builds them (same pytree: the step compiles once)."""
    raw = next(C.get_dataset(cfg, split="train"))
    x = C.get_data_scaler(cfg)(image_batch(raw))[None]
    return distributed.global_batch(with_labels(x, [raw]), s.mesh, leading=1)


def bare_step_s(fn, xb, state, n: int) -> tuple[float, object, dict]:
    """Mean time of ``n`` back-to-back dispatches of the compiled step on one device batch (and,
    when pinned, the device core's busy / idle / outside fractions of that time)."""
    state, m = fn(state, xb)
    jax.block_until_ready(m)
    t0, d0 = time.perf_counter(), device_sched_s(DEVICE_CORE)
    for _ in range(n):
        state, m = fn(state, xb)
    jax.block_until_ready((state, m))
    wall = time.perf_counter() - t0
    return wall / n, state, device_fractions(d0, device_sched_s(DEVICE_CORE), wall, DEVICE_CORE)


DEVICE_CORE: int | None = None  # set by --pin


def loop_step_s(fn, s, cfg, window: int) -> tuple[float, dict]:
    """Per-step wall time of a fresh ``train_loop`` over its steady-state window, and the CPU ms per
    step spent in that window (all threads; when pinned, split into the device's and the host's).

    The loop waits for the device at every log (step 50, 100, ...), so the dispatch of step 51 and
    that of step ``51 + window`` both start right after such a wait: the time between them is the
    device work of ``window`` steps plus everything the loop adds (data, logs, the checkpoints at
    ``window / 2`` and ``window``, the progress bar), without set-up and teardown.
    """
    calls, cpu = [], []

    def timed(state, batch):
        calls.append(time.perf_counter())
        if len(calls) in (WARM + 1, WARM + window + 1):
            cpu.append((process_cpu_s(), device_sched_s(DEVICE_CORE)))
        return fn(state, batch)

    with tempfile.TemporaryDirectory() as workdir:
        train_loop(workdir, train_fn=timed, init_state=s.init_state,
                   abstract_state=s.abstract_state(), train_iter=C.get_dataset(cfg, split="train"),
                   mesh=s.mesh, options=C.loop_options(cfg), batch_size=s.input_shape[0],
                   preprocess=C.get_data_scaler(cfg), progress=True, description="bench")
    (p0, d0), (p1, d1) = cpu
    wall = calls[WARM + window] - calls[WARM]
    per = {"process_cpu_ms": 1e3 * (p1 - p0) / window}
    if DEVICE_CORE is not None:
        device = d1[0] - d0[0]
        per.update(device_cpu_ms=1e3 * device / window,
                   host_cpu_ms=1e3 * (p1 - p0 - device) / window,
                   **device_fractions(d0, d1, wall, DEVICE_CORE),
                   loop_over_device=wall / device)  # how much longer than its own device work
    return wall / window, per


def save_ms(s, repeats: int = 3) -> dict:
    """One checkpoint save: ``save_ms``, the time it blocks the loop (the rest is written in the
    background), and ``save_cpu_ms``, the CPU time it costs in all (Orbax's background commit
    included; on a CPU backend it competes with the steps)."""
    state, times, cpu = s.init_state(), [], []
    with tempfile.TemporaryDirectory() as workdir:
        ckpt = Checkpointer(workdir, max_to_keep=2)
        for i in range(repeats + 1):
            t0, c0 = time.perf_counter(), process_cpu_s()
            ckpt.save(i + 1, state, {"step": i + 1})
            times.append(time.perf_counter() - t0)
            ckpt.wait()  # as in the loop, where saves are far apart
            cpu.append(process_cpu_s() - c0)
        ckpt.close()
    return {"save_ms": round(statistics.median(times[1:]) * 1e3, 1),
            "save_cpu_ms": round(statistics.median(cpu[1:]) * 1e3, 1)}


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
    _, state, _ = bare_step_s(fn, xb, state, 2)
    bares, loops, cpus, bare_fracs = [], [], [], []
    for _ in range(repeats):  # alternate, so that load changes hit both alike
        b, state, fractions = bare_step_s(fn, xb, state, window)
        bares.append(b)
        bare_fracs.append(fractions)
        t, per = loop_step_s(fn, s, cfg, window)
        loops.append(t)
        cpus.append(per)
    bare, loop = statistics.median(bares), statistics.median(loops)
    cpu = {k: round(statistics.median(c[k] for c in cpus), 3) for k in cpus[0]}
    cpu.update({f"bare_{k}": round(statistics.median(f[k] for f in bare_fracs), 3)
                for k in bare_fracs[0]})
    pinned = DEVICE_CORE is not None
    return {"case": ("train_loop_pinned" if pinned else "train_loop") + ("" if SAVES else "_no_saves"),
            "config": config,
            "batch": batch, "window": window, **cpu,
            "layout": (f"XLA on core {DEVICE_CORE}, host threads on the other cores" if pinned
                       else "XLA and the host threads share all cores"),
            "bare_step_ms": round(bare * 1e3, 3), "loop_step_ms": round(loop * 1e3, 3),
            "ratio": _paired(loops, bares), "all_bare_ms": [round(b * 1e3, 3) for b in bares],
            "all_loop_ms": [round(v * 1e3, 3) for v in loops], **save_ms(s),
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
    gen = make_generator(s, C.sampler_spec(cfg), batch_size=num_samples)
    sample = gen.jitted
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
    _, info = compile_timed(sample, *gen.args(params, jax.random.split(key, gen.batch_size)))
    t0 = time.perf_counter()
    jax.block_until_ready(gen.from_rng(params, key))
    first = time.perf_counter() - t0
    nfe = s.sde.N if method == "pc" else int(samplers.SAMPLERS[method].fn(
        jax.tree_util.Partial(call, params), s.sde, shape, jax.random.key(1),
        num_steps=num_steps, eps=s.sampling_eps).nfe)
    jax.block_until_ready(calls(params, x, t, nfe))
    samp, net = [], []
    for r in range(repeats):  # alternate sampler and bare calls
        t0 = time.perf_counter()
        jax.block_until_ready(gen.from_rng(params, jax.random.key(2 + r)))
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


def _pinned_rows(config: str, window: int, batch: int, repeats: int) -> list[dict]:
    """The training rows of ``config`` from a subprocess run with ``--pin`` (the pinning must
    precede JAX's backend, which this process has started)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "pinned.json")
        subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), "--pin",
                        "--skip_sampling", "--configs", config, "--window", str(window),
                        "--batch", str(batch), "--repeats", str(repeats), "--out", out]
                       + ([] if SAVES else ["--no_saves"]), check=True)
        return json.loads(pathlib.Path(out).read_text())["rows"]


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
    p.add_argument("--pin", action="store_true",
                   help="XLA on the first core, host threads on the others (see the module doc)")
    p.add_argument("--no_pinned", action="store_true",
                   help="on CPU, skip the pinned training rows (a subprocess with --pin)")
    p.add_argument("--no_saves", action="store_true", help="no checkpoint in the timed window")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.getLogger("absl").setLevel(logging.WARNING)
    global SAVES
    SAVES = not args.no_saves
    if args.pin:
        global DEVICE_CORE
        DEVICE_CORE, host = pin_device_core()
        print(f"pinned: XLA on core {DEVICE_CORE}, host threads on cores {host}")
    pinned_too = not (args.pin or args.no_pinned or args.skip_training) and (
        jax.default_backend() == "cpu" and hasattr(os, "sched_setaffinity")
        and len(os.sched_getaffinity(0)) >= 2)
    rows = []
    for config in args.configs:
        batch, window, num_samples, pc_steps = SIZES.get(config, (64, 200, 64, 100))
        batch, num_samples = args.batch or batch, args.num_samples or num_samples
        if not args.skip_training:
            rows.append(bench_training(config, args.window or window, batch, args.repeats))
        if pinned_too:
            rows += _pinned_rows(config, args.window or window, batch, args.repeats)
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
    summary += [{"metric": f"{pathlib.Path(r['config']).stem} {r['case']} loop/device time",
                 "value": r["loop_over_device"], "goal": "<= 1.05"}
                for r in rows if "loop_over_device" in r]
    write_results("bench_loop", rows, out=args.out, summary=summary, note=(
        "train_loop(_pinned): per-step time of the full loop over a window of steps between two of its "
        "waits for the device (data prefetched in a thread, EMA, logs every 50, a preemption "
        "checkpoint and a snapshot in the window, progress bar) over the bare compiled step "
        "dispatched back to back on the same batch (pinned: XLA's threads on one core, the host's on "
        "the others, as beside an accelerator; device_cpu_ms / host_cpu_ms: CPU ms per step of "
        "each); save_ms: blocking time of one save; sample_*: make_generator's round time over NFE "
        "network calls (the time changing from call to call) in one jitted fori_loop (the "
        "sampler's ms per NFE in the loop column); trace_s = trace + lower, compile_s = XLA "
        "compile of the train step / the sampler"))
    return rows


if __name__ == "__main__":
    main()
