"""Input-pipeline throughput of your own images: a folder of N generated 32x32 PNGs (10 class
subfolders), the same files in a zip (stored, as EDM's dataset_tool writes), and the same PNG
bytes as a TFDS dataset in ArrayRecord format (:func:`scoresde_jax.data.tfds.write_array_record`,
what ``tfds build`` makes), each read by :func:`scoresde_jax.data.make_dataset` as training reads
it (shuffled, random flips, Grain reader threads).

Rows: images/s over ``--batches`` batches of ``--batch`` after 3 warm-up batches, alternating the
sources for ``--rounds`` rounds (the machine is shared: compare within a run); the time to open
each source (the folder's first, uncached scan decodes every file; later opens read the cached
scan); the index's bytes per image and the process's resident memory after reading.

    nice -n 15 .venv/bin/python benchmarks/bench_data.py [--num_images 50000] [--batch 128]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
import zipfile

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from scoresde_jax import data  # noqa: E402
from scoresde_jax.data import folder as folder_lib  # noqa: E402
from scoresde_jax.data import tfds as tfds_data  # noqa: E402

NAME = "bench_folder_images"
CLASSES = 10


def _png(rng: np.random.Generator) -> bytes:
    """A 32x32 RGB image with CIFAR-like PNG size: smooth 8x8 noise upsampled, plus grain."""
    low = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((32, 32), Image.BICUBIC),
                     np.float32)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def prepare(root: pathlib.Path, n: int) -> dict:
    """Write the folder, the zip and the ArrayRecord dataset (reused from a ``--workdir`` that
    holds them for the same ``n``)."""
    done = root / f"prepared_{n}.json"
    if done.exists():
        return json.loads(done.read_text())
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    examples = [(_png(rng), i % CLASSES) for i in range(n)]
    folder = root / "folder"
    for k in range(CLASSES):
        (folder / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i, (png, k) in enumerate(examples):
        (folder / f"class{k}" / f"{i:06d}.png").write_bytes(png)
    t_folder = time.perf_counter() - t0
    t0 = time.perf_counter()
    with zipfile.ZipFile(root / "images.zip", "w", zipfile.ZIP_STORED) as z:
        for i, (png, k) in enumerate(examples):
            z.writestr(f"class{k}/{i:06d}.png", png)
    t_zip = time.perf_counter() - t0
    t0 = time.perf_counter()
    tempfile.tempdir = str(root)
    tfds_data.write_array_record(NAME, {"train": examples}, data_dir=str(root / "tfds"),
                                 image_shape=(32, 32, 3), num_classes=CLASSES)
    t_tfds = time.perf_counter() - t0
    prep = {"png_bytes_mean": float(np.mean([len(p) for p, _ in examples])),
            "write_folder_s": t_folder, "write_zip_s": t_zip, "build_array_record_s": t_tfds}
    done.write_text(json.dumps(prep))
    return prep


def opener(kind: str, root: pathlib.Path, batch: int, threads: int):
    common = dict(batch_size=batch, image_size=32, shard=(0, 1), seed=0, random_flip=True,
                  num_threads=threads)
    if kind == "tfds":
        return lambda: data.make_dataset("CIFAR10", tfds_name=NAME, data_dir=str(root / "tfds"),
                                         **common)
    path = root / ("folder" if kind == "folder" else "images.zip")
    return lambda: data.make_dataset("folder", path=str(path), num_classes=CLASSES, **common)


def throughput(make, batch: int, batches: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    it = make()
    open_s = time.perf_counter() - t0
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        b = next(it)
    dt = time.perf_counter() - t0
    assert b["image"].shape == (batch, 32, 32, 3)
    return batch * batches / dt, open_s


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_images", type=int, default=50000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=100)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, nargs="+", default=[4, 1])
    p.add_argument("--workdir", default=None,
                   help="where the images go, kept and reused (default: a temp dir, removed)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    root = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="bench_data_"))
    os.environ["XDG_CACHE_HOME"] = str(root / "cache")
    shutil.rmtree(root / "cache", ignore_errors=True)  # the first scan is uncached
    try:
        prep = prepare(root, args.num_images)
        rows = []
        t0 = time.perf_counter()
        index = folder_lib.index_folder(str(root / "folder"), progress=False)
        first_scan = time.perf_counter() - t0
        t0 = time.perf_counter()
        folder_lib.index_folder(str(root / "images.zip"),
                                progress=False)
        first_scan_zip = time.perf_counter() - t0
        index_bytes = index.files.nbytes + index.sizes.nbytes + index.labels.nbytes
        for threads in args.threads:
            for r in range(args.rounds):
                for kind in ("folder", "zip", "tfds"):
                    ips, open_s = throughput(opener(kind, root, args.batch, threads), args.batch,
                                             args.batches)
                    rows.append({"source": kind, "threads": threads, "round": r,
                                 "images_per_s": round(ips, 1), "open_s": round(open_s, 3),
                                 "rss_mib": round(_rss_mib(), 1)})
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    summary = {"num_images": args.num_images, "first_scan_folder_s": round(first_scan, 2),
               "first_scan_zip_s": round(first_scan_zip, 2),
               "index_bytes_per_image": round(index_bytes / len(index), 1),
               **{k: round(v, 2) for k, v in prep.items()}}
    print(f"{args.num_images} PNGs 32x32 ({summary['png_bytes_mean']:.0f} bytes each): "
          f"first scan folder {first_scan:.1f} s, zip {first_scan_zip:.1f} s; index "
          f"{summary['index_bytes_per_image']} bytes/image; ArrayRecord build "
          f"{prep['build_array_record_s']:.1f} s; load average {os.getloadavg()[0]:.1f}")
    print(f"{'source':8} {'threads':>7} {'images/s (best of rounds)':>26} {'open s':>8} "
          f"{'RSS MiB':>8}")
    for threads in args.threads:
        for kind in ("folder", "zip", "tfds"):
            sel = [x for x in rows if x["source"] == kind and x["threads"] == threads]
            best = max(sel, key=lambda x: x["images_per_s"])
            print(f"{kind:8} {threads:>7} {best['images_per_s']:>26.0f} "
                  f"{min(x['open_s'] for x in sel):>8.2f} {max(x['rss_mib'] for x in sel):>8.0f}")
    write_results("bench_data", rows, note=f"make_dataset images/s, batch {args.batch}, "
                  f"{args.batches} batches, random flips; {summary}", out=args.out,
                  summary=[{"metric": f"{x['source']} images/s ({x['threads']} threads)",
                            "value": x["images_per_s"]} for x in rows if x["round"] == 0])


if __name__ == "__main__":
    main()
