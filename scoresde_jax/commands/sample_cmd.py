"""The ``sample`` job: samples of a trained workdir's EMA parameters as PNG + ``.npy``."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax.metrics_io import save_samples
from scoresde_jax.training import distributed, restore_params

log = logging.getLogger("scoresde_jax.commands")


def sample(config: Any, workdir: str, *, num_samples: int = 64, out: str | None = None,
           seed: int = 0, model: Any = None, checkpoint: int | None = None
           ) -> tuple[np.ndarray, str]:
    """``num_samples`` samples with the latest EMA parameters of ``workdir`` and the sampler of
    ``config.sampling``, written as a PNG grid (a scatter plot for 2-D data) and ``.npy``.

    Returns ``(samples, png_path)``: images ``(N, H, W, C)`` in ``[0, 1]`` or vectors ``(N, D)``.
    """
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"Workdir {os.path.abspath(workdir)} does not exist; pass the "
                                "--workdir of a training run.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r} must be an integer >= 1 (--num_samples N).")
    s = config_lib.setup(config, model=model)
    params, step = restore_params(workdir, s.abstract_state(), step=checkpoint)
    sample_fn = config_lib.make_sample_fn(config, s, num_samples=num_samples)
    samples = distributed.to_host(sample_fn(params, jax.random.PRNGKey(seed)))
    # Its own folder: never over the training run's samples/ (snapshots, final samples).
    out = out or os.path.join(os.path.abspath(workdir), "sample", f"step_{step}_seed_{seed}",
                              "sample.png")
    if distributed.is_main_process():
        save_samples(samples, out)
        log.info("Wrote %d samples of step %d to %s", num_samples, step, out)
    return samples, out
