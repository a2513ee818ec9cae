"""Throughput of the FID Inception-v3 extractor (``load_inception``): images/s and the time a
50,000-sample FID / IS evaluation would spend in the network.

Random weights with the real shapes (``random_state_dict``): the cost does not depend on the
values. Inputs are uint8 images at ``--size`` (32 for CIFAR-10), resized to 299 inside the jit.

Prints a table and writes ``benchmarks/results/bench_inception.json``.

    .venv/bin/python benchmarks/bench_inception.py [--batch 50] [--size 32] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import tempfile
import time

import jax
import numpy as np

from scoresde_jax.evaluation import inception as inc

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def run(batches, size, modes, repeats, n_eval):
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / "random.npz"
        np.savez(src, **inc.random_state_dict(0))
        weights = inc.convert_weights(src, pathlib.Path(tmp) / "inception_fid.npz")
        extractors = {m: inc.load_inception(weights, preprocess=m) for m in modes}
    rng = np.random.default_rng(0)
    for batch in batches:
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        for mode, extractor in extractors.items():
            t0 = time.perf_counter()
            extractor(images)
            first = time.perf_counter() - t0
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                extractor(images)
                times.append(time.perf_counter() - t0)
            run_s = float(np.median(times))
            ips = batch / run_s
            rows.append(
                dict(
                    preprocess=mode,
                    batch=batch,
                    input_size=size,
                    compile_and_first_s=round(first, 2),
                    run_s=round(run_s, 3),
                    images_per_s=round(ips, 2),
                    eval_minutes=round(n_eval / ips / 60, 1),
                )
            )
            r = rows[-1]
            print(
                f"{mode:>15} {batch:>6} {size:>5} {r['compile_and_first_s']:>9.2f} "
                f"{r['run_s']:>8.3f} {r['images_per_s']:>9.2f} {r['eval_minutes']:>10.1f}",
                flush=True,
            )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[50])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--modes", nargs="+", default=["score_sde"], choices=inc.PREPROCESS_MODES)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-eval", type=int, default=50_000)
    parser.add_argument("--out", default=str(RESULTS / "bench_inception.json"))
    args = parser.parse_args()
    print(f"FID Inception-v3 extractor, float32, {jax.default_backend()}, uint8 input -> 299")
    print(
        f"{'preprocess':>15} {'batch':>6} {'size':>5} {'compile+1':>9} {'run_s':>8} "
        f"{'images/s':>9} {f'min/{args.n_eval}':>10}"
    )
    rows = run(args.batch, args.size, args.modes, args.repeats, args.n_eval)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        benchmark="bench_inception",
        dtype="float32",
        n_eval=args.n_eval,
        jax=jax.__version__,
        backend=jax.default_backend(),
        device=str(jax.devices()[0]),
        device_count=jax.device_count(),
        machine=platform.machine(),
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
