"""Training throughput: steps/s of the jitted train step for the embedded digits config and the CIFAR-10
configs, on 1 device and on 8 forced host devices (data parallel over a 'data' mesh axis).

    .venv/bin/python benchmarks/bench_train.py [--configs digits_ddpmpp vp/cifar10_ddpmpp_continuous ...]
        [--devices 1 8] [--batch 8] [--steps 3] [--dtypes float32 bfloat16] [--remat]
        [--out benchmarks/results/bench_train_<platform>.json]

Each (config, devices) cell runs in a fresh subprocess (XLA_FLAGS must be set before JAX starts), times
compilation + the first step, then ``--steps`` more steps, and reports the median step time. Prints a
table and writes JSON with trace and compile seconds, MFU and memory per row. On a GPU/TPU machine pass
``--devices 1`` (the forced host devices are CPU only), e.g. NCSN++ CIFAR-10 with bf16 and remat:
``--configs ve/cifar10_ncsnpp_continuous --devices 1 --batch 128 --dtypes float32 bfloat16 --remat``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ["digits_ddpmpp", "vp/cifar10_ddpmpp_continuous", "ve/cifar10_ncsnpp_continuous"]

CELL = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import jax, numpy as np
from benchmarks.common import compile_timed, device_info, mfu, peak_memory_mib
from scoresde_jax import config as C
from scoresde_jax import training
from scoresde_jax.training import distributed
cfg = C.load_config({config!r})
cfg.training.batch_size = {batch}
cfg.training.n_jitted_steps = 1
cfg.model.dtype = {dtype!r}
cfg.model.remat = {remat!r}
s = C.setup(cfg)
st = s.init_state()
fn = training.make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh)
rng = np.random.default_rng(0)
def batch():
    x = rng.random((1,) + s.input_shape, dtype=np.float32) * 2 - 1
    return distributed.global_batch(x, s.mesh, leading=1)
t0 = time.perf_counter(); xb = batch(); step, info = compile_timed(fn, st, xb)
st, m = step(st, xb); m.loss.block_until_ready()
first = time.perf_counter() - t0
times = []
for _ in range({steps}):
    xb = batch()
    t0 = time.perf_counter(); st, m = step(st, xb); m.loss.block_until_ready(); times.append(time.perf_counter() - t0)
step_s = float(np.median(times))
dev = device_info()
print(json.dumps(dict(params=int(sum(x.size for x in jax.tree.leaves(st.params))), devices=jax.device_count(),
                      platform=jax.devices()[0].platform, device_kind=dev["device_kind"],
                      peak_tflops=dev["peak_tflops"], compile_and_first_s=first, trace_s=info["trace_s"] + info["lower_s"],
                      compile_s=info["compile_s"], gflops=info["gflops"], mfu=mfu(info["gflops"], step_s),
                      temp_mib=info["temp_mib"], memory_mib=peak_memory_mib(),
                      step_s=step_s, all_step_s=times, loss=float(m.loss[-1]))))
"""


def run_cell(config: str, devices: int, batch: int, steps: int, timeout: int,
             dtype: str = "float32", remat: bool = False) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
        env["JAX_PLATFORMS"] = "cpu"
    path = config if config.endswith(".py") else os.path.join("configs", config + ".py")
    code = CELL.format(root=ROOT, config=path, batch=batch, steps=steps, dtype=dtype, remat=remat)
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(config=config, devices=devices, batch=batch, dtype=dtype, remat=remat,
                    error=f"timeout after {timeout}s")
    if r.returncode != 0:
        return dict(config=config, devices=devices, batch=batch, dtype=dtype, remat=remat,
                    error=r.stderr.strip().splitlines()[-1])
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row.update(config=config, batch=batch, dtype=dtype, remat=remat, steps_per_s=1.0 / row["step_s"],
               images_per_s=batch / row["step_s"], wall_s=time.perf_counter() - t0)
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--devices", nargs="+", type=int, default=[1, 8])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--dtypes", nargs="+", default=["float32"], help="model.dtype values")
    p.add_argument("--remat", action="store_true", help="also time model.remat=True")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--out", default=None, help="default results/bench_train_<platform>.json")
    args = p.parse_args(argv)
    rows = []
    hdr = (f"{'config':34s} {'dev':>3s} {'batch':>5s} {'dtype':8s} {'remat':5s} {'params':>10s} "
           f"{'trace s':>7s} {'compile s':>9s} {'step s':>8s} {'MFU':>6s} {'temp MiB':>8s}")
    print(hdr)
    print("-" * len(hdr))
    for config in args.configs:
        for d in args.devices:
            for dtype in args.dtypes:
                for remat in ([False, True] if args.remat else [False]):
                    row = run_cell(config, d, args.batch, args.steps, args.timeout, dtype, remat)
                    rows.append(row)
                    head = f"{config:34s} {d:3d} {args.batch:5d} {dtype:8s} {str(remat):5s}"
                    if "error" in row:
                        print(f"{head}  ERROR {row['error']}")
                        continue
                    print(f"{head} {row['params']:10d} {row['trace_s']:7.1f} {row['compile_s']:9.1f} "
                          f"{row['step_s']:8.3f} {row['mfu'] or float('nan'):6.3f} "
                          f"{row['temp_mib'] or float('nan'):8.0f}", flush=True)
    platform_ = next((r["platform"] for r in rows if "platform" in r), "cpu")
    out = args.out or os.path.join(ROOT, "benchmarks", "results", f"bench_train_{platform_}.json")
    meta = dict(benchmark="bench_train", machine=platform.machine(), cpu_count=os.cpu_count(),
                load_average_1m=os.getloadavg()[0], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                device_kind=next((r["device_kind"] for r in rows if "device_kind" in r), ""),
                note="median step time after compile; n_jitted_steps=1; batch sharded over 'data' on the "
                     "devices; trace_s = jit trace + lower, compile_s = XLA compile; mfu = XLA cost-analysis "
                     "FLOPs / step time / peak; temp_mib = the compiled step's temporary buffers; "
                     "memory_mib = the device allocator's peak (GPU/TPU)")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=2)
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
