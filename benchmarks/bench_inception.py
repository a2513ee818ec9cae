"""Throughput of the FID Inception-v3 extractor (``load_inception``): images/s, the time a
50,000-sample FID / IS evaluation would spend in the network, trace and compile seconds, and,
in the same process (the machine is shared: compare ratios, not absolute numbers):

* ``extractor``: what :func:`~scoresde_jax.evaluation.inception.load_inception` runs (one jit of
  preprocessing + network, BatchNorm folded, ``pad_valid`` on CPU, 1x1 convolutions as matmuls,
  batch sharded over devices);
* ``original``: ``inception_net.py`` as first committed (``git show ORIGINAL:...``; skipped
  without git): BatchNorm unfolded, ``VALID`` convolutions as they are, 1x1 convolutions as
  convolutions;
* ``bn_valid``: today's network with both switches off (only the 1x1 matmuls differ from
  ``original``); ``folded_only`` / ``pad_valid_only``: one switch on; ``folded_pad_valid``: both
  (the extractor's network without its wrapper);
* ``conv_stack``: the ceiling, a plain ``lax.conv_general_dilated`` stack of the same FLOPs
  (32 layers 3x3, 128 -> 128 channels at 35x35 + ReLU, 11.4 GFLOP per image);
* ``matmul``: a 1024^3 float32 matmul, GFLOP/s of the machine at that moment.

Random weights with the real shapes (``random_state_dict``): the cost does not depend on the
values. Inputs are uint8 images at ``--size`` (32 for CIFAR-10), resized to 299 inside the jit.
Inception-v3 at 299 px is 5.7 GMAC = 11.4 GFLOP per image.

Prints a table and writes ``benchmarks/results/bench_inception.json``.

    nice -n 15 .venv/bin/python benchmarks/bench_inception.py [--batch 16] [--size 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from scoresde_jax.evaluation import inception as inc
from scoresde_jax.evaluation import inception_net as net

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]
ORIGINAL = "37ece1c"  # the commit of inception_net.py before the speed work (issue 9)
GFLOP_PER_IMAGE = 11.42  # 2 x 5.71 GMAC (sum over the 94 convolutions and the classifier)
HI = jax.lax.Precision.HIGHEST


def _variables():
    sd = inc.random_state_dict(0)
    flat = {fn: net.torch_to_flax(n, sd[n]) for n, (fn, _, _) in net.torch_name_map().items()}
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def _original_module():
    """``inception_net.py`` at commit ORIGINAL, imported from a temporary file (None without git)."""
    r = subprocess.run(["git", "show", f"{ORIGINAL}:scoresde_jax/evaluation/inception_net.py"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        return None
    path = pathlib.Path(tempfile.mkdtemp()) / "inception_net_original.py"
    path.write_text(r.stdout)
    spec = importlib.util.spec_from_file_location("inception_net_original", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["inception_net_original"] = mod  # flax's dataclass transform looks it up
    spec.loader.exec_module(mod)
    return mod


def _network(variables, module, *, folded, mode):
    """``(jitted f, args)`` for a network variant; preprocessing inside the jit."""
    v = jax.tree.map(jnp.asarray, net.fold_batchnorm(variables) if folded else variables)

    @jax.jit
    def f(v, images):
        return module.apply(v, inc.preprocess_images(images, mode=mode))["pool_3"]

    return f, v


def _conv_stack(batch):
    rng = np.random.default_rng(0)
    ws = [jnp.asarray(rng.normal(0, 0.04, (3, 3, 128, 128)).astype(np.float32)) for _ in range(32)]
    x = jnp.asarray(rng.normal(size=(batch, 35, 35, 128)).astype(np.float32))

    @jax.jit
    def f(ws, h):
        for w in ws:
            dn = ("NHWC", "HWIO", "NHWC")
            h = jax.nn.relu(jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=dn,
                                                         precision=HI))
        return h.mean((1, 2))

    flops = 32 * 2 * 35 * 35 * 128 * 128 * 9 * batch
    return f, (ws, x), flops


def _timed_compile(f, *args):
    t0 = time.perf_counter()
    traced = f.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    lowered.compile()
    t3 = time.perf_counter()
    return dict(trace_s=round(t1 - t0, 2), lower_s=round(t2 - t1, 2), compile_s=round(t3 - t2, 2))


def run(batch, size, mode, repeats, n_eval, variants):
    variables = _variables()
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    cases = {}
    if "extractor" in variants:
        ext = inc.InceptionExtractor(variables, preprocess=mode, max_batch=batch)
        args = (ext.variables, jax.device_put(images, ext._batch), mode, ext.pad_valid)
        cases["extractor"] = (functools.partial(ext, images), inc._extract_jit, args,
                              GFLOP_PER_IMAGE * 1e9 * batch)
    original = _original_module() if "original" in variants else None
    for name, folded, pad_valid in [("original", False, False), ("bn_valid", False, False),
                                    ("folded_only", True, False), ("pad_valid_only", False, True),
                                    ("folded_pad_valid", True, True)]:
        if name in variants and (name != "original" or original is not None):
            module = (original.InceptionV3() if name == "original" else
                      net.InceptionV3(folded=folded, pad_valid=pad_valid))
            f, v = _network(variables, module, folded=folded, mode=mode)
            cases[name] = (functools.partial(f, v, images), f, (v, images),
                           GFLOP_PER_IMAGE * 1e9 * batch)
    if "conv_stack" in variants:
        f, args, flops = _conv_stack(batch)
        cases["conv_stack"] = (functools.partial(f, *args), f, args, flops)
    m = jnp.ones((1024, 1024), jnp.float32)
    mm = jax.jit(lambda a: jnp.dot(a, a, precision=HI))
    cases["matmul"] = (functools.partial(mm, m), mm, (m,), 2 * 1024**3)

    rows = {}
    for name, (call, f, args, flops) in cases.items():
        rows[name] = dict(name=name, batch=batch, input_size=size, preprocess=mode,
                          **_timed_compile(f, *args))
        jax.block_until_ready(call())  # first call (compiles through the jit cache)
    times = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved: every variant sees the same machine load
        for name, (call, _, _, _) in cases.items():
            t0 = time.perf_counter()
            jax.block_until_ready(call())
            times[name].append(time.perf_counter() - t0)
    for name, (_, _, _, flops) in cases.items():
        t = float(np.min(times[name]))
        r = rows[name]
        r.update(run_s=round(t, 3), run_s_median=round(float(np.median(times[name])), 3),
                 gflop_per_s=round(flops / t / 1e9, 1))
        if name != "matmul":
            r.update(images_per_s=round(batch / t, 2), eval_minutes=round(n_eval / (batch / t) / 60, 1))
    base = rows.get("original", {}).get("run_s")
    for r in rows.values():
        if base and "images_per_s" in r:
            r["speedup_vs_original"] = round(base / r["run_s"], 2)
    return list(rows.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--mode", default="score_sde", choices=inc.PREPROCESS_MODES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-eval", type=int, default=50_000)
    parser.add_argument("--variants", nargs="+", default=[
        "extractor", "original", "bn_valid", "folded_only", "pad_valid_only", "conv_stack"])
    parser.add_argument("--out", default=str(RESULTS / "bench_inception.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"FID Inception-v3, float32, {jax.default_backend()} x{jax.local_device_count()}, "
          f"uint8 {args.size} px -> 299, batch {args.batch}, load {load_before[0]:.1f}")
    rows = run(args.batch, args.size, args.mode, args.repeats, args.n_eval, args.variants)
    hdr = (f"{'variant':>16} {'trace':>6} {'lower':>6} {'compile':>7} {'run_s':>7} {'GF/s':>6} "
           f"{'img/s':>6} {f'min/{args.n_eval}':>9} {'speedup':>7}")
    print(hdr)
    for r in rows:
        print(f"{r['name']:>16} {r['trace_s']:>6.2f} {r['lower_s']:>6.2f} {r['compile_s']:>7.2f} "
              f"{r['run_s']:>7.3f} {r['gflop_per_s']:>6.1f} {r.get('images_per_s', ''):>6} "
              f"{r.get('eval_minutes', ''):>9} {r.get('speedup_vs_original', ''):>7}")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        benchmark="bench_inception", dtype="float32", precision="HIGHEST", n_eval=args.n_eval,
        gflop_per_image=GFLOP_PER_IMAGE, jax=jax.__version__, backend=jax.default_backend(),
        device=str(jax.devices()[0]), device_kind=jax.devices()[0].device_kind,
        device_count=jax.local_device_count(), cpu_count=os.cpu_count(),
        machine=platform.machine(), load_avg_before=[round(x, 2) for x in load_before],
        load_avg_after=[round(x, 2) for x in os.getloadavg()],
        xla_flags=os.environ.get("XLA_FLAGS", ""), original_commit=ORIGINAL,
        note="shared 2-core CPU: absolute numbers move with the load; ratios within one run hold",
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
