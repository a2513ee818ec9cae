"""The ``sample`` job: samples of a trained workdir's EMA parameters, in resumable rounds.

``scoresde sample --method dpm_solver_pp_3m --nfe 20 --num_samples 50000 --batch_size 500 --out
DIR`` writes into its own folder (default ``<workdir>/samples/sample_<step>_<method>_<nfe>/``,
never over the training run's outputs):

* ``round_<k>.npz`` -- ``{"samples": uint8 (n, H, W, C)}`` per round (``trunc(255 x)``, the
  official quantization; float32 for vector data), written atomically; a restarted run reuses the
  finished rounds (:func:`scoresde_jax.commands.rounds.run_rounds`) -- round ``k`` draws from
  ``fold_in(PRNGKey(seed), k)``, so a resumed run gives what an unbroken one would;
* ``png/<index>.png`` with ``png=True`` (one file per image: what clean-fid, torch-fidelity and
  EDM's ``fid.py`` read from a folder), ``grid.png`` (the first 256) and ``summary.json`` (method,
  options, budget and evaluations used, seconds per image, checkpoint step).

Each round's batch is sharded over all devices (the ``'data'`` axis of the setup's mesh) by
:func:`scoresde_jax.commands.sampling.round_fn`, the round of the ``eval`` job too. A
class-conditional model samples ``classes`` (``--class 3`` or ``--class 0,1,2``, cycled over the
samples; default all) at classifier-free guidance ``--guidance w``; ``--classifier DIR
--classifier_scale s`` guides with a noise-conditional classifier instead. ``summary.json`` records
the classes and the guidance.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax
import numpy as np
from PIL import Image

from scoresde_jax import config as config_lib
from scoresde_jax.commands.rounds import run_rounds
from scoresde_jax.commands.sampling import conditioning, round_fn
from scoresde_jax.metrics_io import save_samples
from scoresde_jax.training import distributed, restore_params

log = logging.getLogger("scoresde_jax.commands")

GRID_MAX = 256  # images in grid.png


def _check_same_run(out_dir: str, meta: dict) -> None:
    """Rounds already in ``out_dir`` must come from the same sampler, seed and checkpoint."""
    path = os.path.join(out_dir, "rounds.json")
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old != meta:
            diff = sorted(k for k in meta if old.get(k) != meta[k])
            raise ValueError(f"{out_dir} holds rounds of another run (differs in {diff}); pass a "
                             "new --out or delete that folder.")
    elif distributed.is_main_process():
        os.makedirs(out_dir, exist_ok=True)
        with open(path, "w") as f:
            json.dump(meta, f, indent=1)


def _save_pngs(samples: np.ndarray, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    for i, img in enumerate(samples):
        name = os.path.join(folder, f"{i:06d}.png")
        if not os.path.exists(name):
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(name)


def sample(config: Any, workdir: str, *, num_samples: int = 64, out: str | None = None,
           seed: int = 0, model: Any = None, checkpoint: int | None = None,
           method: str | None = None, nfe: int | None = None, batch_size: int | None = None,
           png: bool = False, progress: bool = True, classes: Any = None,
           guidance: float | None = None, classifier: str | None = None,
           classifier_scale: float | None = None) -> tuple[np.ndarray, str]:
    """``num_samples`` samples of the EMA parameters of ``workdir`` (the newest checkpoint, or step
    ``checkpoint``) with ``method`` (default ``config.sampling.method``) under a budget of ``nfe``
    score evaluations (default: the config's step count), in resumable rounds of ``batch_size``
    (default: one round); see the module docstring for what is written where.  ``out`` is the
    output folder (an ``out`` ending in ``.png`` names the grid, the folder is its directory).
    ``classes`` / ``guidance`` / ``classifier`` / ``classifier_scale``: the conditioning
    (:func:`scoresde_jax.commands.sampling.conditioning`).

    Returns ``(samples, grid_png_path)``: images ``(N, H, W, C)`` in ``[0, 1]`` (quantized to
    ``k / 255``) or vectors ``(N, D)``.
    """
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"Workdir {os.path.abspath(workdir)} does not exist; pass the "
                                "--workdir of a training run.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1 (--num_samples N).")
    batch_size = int(batch_size or num_samples)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1 (--batch_size N).")
    s = config_lib.setup(config, model=model)
    params, step = restore_params(workdir, s.abstract_state(), step=checkpoint)
    method, options = config_lib.sampler_options(config, method)
    cond = conditioning(config, s, classes=classes, guidance=guidance, classifier=classifier,
                        classifier_scale=classifier_scale)
    if out is not None and out.endswith(".png"):
        out_dir, grid = os.path.dirname(os.path.abspath(out)), out
    else:
        out_dir = out or os.path.join(os.path.abspath(workdir), "samples",
                                      f"sample_{step}_{method}_{nfe or 'default'}{cond.tag()}")
        grid = os.path.join(out_dir, "grid.png")
    meta = {"method": method, "options": {k: repr(v) for k, v in options.items()},
            "nfe_budget": nfe, "seed": int(seed), "checkpoint_step": int(step), **cond.meta()}
    _check_same_run(out_dir, meta)
    fn = round_fn(config, s, batch_size=batch_size, method=method, nfe=nfe, cond=cond)
    key, used, seconds = jax.random.PRNGKey(seed), [], []

    def make_round(k: int, n: int) -> dict:
        t0 = time.perf_counter()
        x, nfe_used = distributed.to_host(fn(params, jax.random.fold_in(key, k), k))
        seconds.append(time.perf_counter() - t0)
        used.append(int(nfe_used))
        return {"samples": np.asarray(x)[:n]}

    t_start = time.perf_counter()
    samples = run_rounds(out_dir, num_items=num_samples, batch_size=batch_size,
                         make_round=make_round, desc=f"sample {method}", progress=progress)["samples"]
    wall = time.perf_counter() - t_start
    steady = seconds[1:] or seconds  # the first computed round includes compilation
    floats = samples.astype(np.float32) / 255.0 if samples.dtype == np.uint8 else samples
    if distributed.is_main_process():
        save_samples(floats[:GRID_MAX], grid)
        if floats.ndim == 2:  # vector data: every sample beside the scatter plot (small)
            np.save(os.path.splitext(grid)[0] + ".npy", floats)
        if png and samples.dtype == np.uint8:
            _save_pngs(samples, os.path.join(out_dir, "png"))
        summary = {**meta, "options": {k: v if isinstance(v, (int, float, str, bool)) else repr(v)
                                       for k, v in options.items()},
                   "nfe": used[-1] if used else None, "num_samples": num_samples,
                   "batch_size": batch_size,
                   "rounds": -(-num_samples // batch_size), "rounds_computed": len(seconds),
                   "seconds": wall, "seconds_per_image": (sum(steady) / (len(steady) * batch_size)
                                                          if steady else None),
                   "devices": s.mesh.devices.size, "grid": grid,
                   "png": os.path.join(out_dir, "png") if png else None}
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        log.info("Wrote %d samples of step %d (%s, nfe %s) to %s", num_samples, step, method,
                 summary["nfe"], out_dir)
    return floats, grid
