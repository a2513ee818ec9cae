"""``scoresde sample``: samples of a trained workdir's EMA parameters, in resumable rounds.

``scoresde sample --method dpm_solver_pp_3m --nfe 20 --num_samples 50000 --batch_size 500 --out
DIR`` writes into its own folder (default ``<workdir>/samples/sample_<step>_<method>_<nfe>/``,
never over the training run's outputs):

* ``round_<k>.npz`` -- ``{"samples": uint8 (n, H, W, C)}`` per round (``trunc(255 x)``, the
  official quantization; float32 for vector data), written atomically and reused by a restarted
  run (:func:`scoresde_jax.jobs.generate.generate`);
* ``png/<index>.png`` with ``--png`` (one file per image, what clean-fid, torch-fidelity and
  EDM's ``fid.py`` read from a folder), ``grid.png`` (the first 256) and ``summary.json``
  (sampler, options, budget and evaluations used, seconds per image, checkpoint step,
  conditioning).
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from scoresde_jax.jobs import common
from scoresde_jax.jobs.generate import Conditioning, SamplerSpec, generate, make_generator
from scoresde_jax.jobs.rounds import record_digest
from scoresde_jax.metrics_io import save_samples
from scoresde_jax.training import distributed, restore_params

log = logging.getLogger("scoresde_jax.jobs")

GRID_MAX = 256  # images in grid.png


class SampleOptions(NamedTuple):
    """The options of :func:`sample` (built by :func:`scoresde_jax.config.sample_options`)."""

    sampler: SamplerSpec
    num_samples: int = 64
    batch_size: int | None = None  # samples per resumable round (default: all in one)
    seed: int = 0  # image i draws from fold_in(PRNGKey(seed), i)
    seeds: tuple[int, ...] | None = None  # or image j from PRNGKey(seeds[j]) (EDM's --seeds)
    cond: Conditioning = Conditioning()
    checkpoint: int | None = None
    out: str | None = None  # the output folder, or a path ending in .png naming the grid
    png: bool = False
    progress: bool = True
    overwrite: bool = False


class SampleOutput(NamedTuple):
    """Images ``(N, H, W, C)`` in [0, 1] (quantized to ``k / 255``) or vectors ``(N, D)``, and
    the JSON summary (also written to ``summary.json``)."""

    samples: np.ndarray
    summary: dict


def _save_pngs(samples: np.ndarray, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(samples):
        name = os.path.join(folder, f"{i:06d}.png")
        if not os.path.exists(name):
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(name)


def sample(setup: Any, options: SampleOptions, workdir: str) -> SampleOutput:
    """``options.num_samples`` samples of the EMA parameters of ``workdir`` (the newest good
    checkpoint, or step ``options.checkpoint``) with ``options.sampler`` under
    ``options.cond``; see the module docstring for what is written where."""
    o = options
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"Workdir {os.path.abspath(workdir)} does not exist; pass the "
                                "--workdir of a training run.")
    if isinstance(o.num_samples, bool) or not isinstance(o.num_samples, int) or o.num_samples < 1:
        raise ValueError(f"num_samples={o.num_samples!r} must be an integer >= 1 "
                         "(--num_samples N).")
    batch_size = int(o.batch_size or o.num_samples)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1 (--batch_size N).")
    params, step = restore_params(workdir, setup.abstract_state(), step=o.checkpoint)
    method = o.sampler.method
    gen = make_generator(setup, o.sampler, batch_size=batch_size, cond=o.cond)
    record = common.job_record("sample", setup, o, step=step, params=params,
                               classifier_params=gen.classifier_params,
                               drop=("batch_size", "png"))
    if o.out is not None and o.out.endswith(".png"):
        out_dir, grid = os.path.dirname(os.path.abspath(o.out)), o.out
    else:
        out_dir = o.out or os.path.join(os.path.abspath(workdir), "samples",
                                        f"sample_{step}_{method}_{o.sampler.nfe or 'default'}"
                                        f"{o.cond.tag()}_{record_digest(record)}")
        grid = os.path.join(out_dir, "grid.png")
    meta = {"checkpoint_step": int(step), **o.cond.record()}
    res = generate(gen, params, out_dir, num_samples=o.num_samples, seed=o.seed, seeds=o.seeds,
                   record=record, overwrite=o.overwrite, desc=f"sample {method}",
                   progress=o.progress)
    samples = res.arrays["samples"]
    steady = res.seconds[1:] or res.seconds  # the first computed round includes compilation
    x = common.floats(samples)
    summary = {**common.header("sample", step=step, seed=o.seeds or o.seed, options=o,
                               seconds=sum(res.seconds)),
               **meta, "sampler": o.sampler.record(), "method": method, "nfe": res.nfe,
               "num_samples": o.num_samples,
               "batch_size": batch_size, "rounds": -(-o.num_samples // batch_size),
               "rounds_computed": len(res.seconds),
               "seconds_per_image": (sum(steady) / (len(steady) * batch_size)
                                     if steady else None),
               "devices": setup.mesh.devices.size, "grid": grid,
               "png": os.path.join(out_dir, "png") if o.png else None,
               "summary": os.path.join(out_dir, "summary.json")}
    if distributed.is_main_process():
        save_samples(x[:GRID_MAX], grid)
        if x.ndim == 2:  # vector data: every sample beside the scatter plot (small)
            np.save(os.path.splitext(grid)[0] + ".npy", x)
        if o.png and samples.dtype == np.uint8:
            _save_pngs(samples, os.path.join(out_dir, "png"))
        common.write_results(summary["summary"], summary)
        log.info("Wrote %d samples of step %d (%s, nfe %s) to %s", o.num_samples, step, method,
                 summary["nfe"], out_dir)
    return SampleOutput(x, summary)
