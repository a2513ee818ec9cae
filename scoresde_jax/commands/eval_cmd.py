"""The ``eval`` job (sample-quality metrics of a workdir) and ``train_and_evaluate``."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from scoresde_jax import config as config_lib
from scoresde_jax.commands.sample_cmd import sample
from scoresde_jax.commands.train_cmd import train
from scoresde_jax.training import distributed

log = logging.getLogger("scoresde_jax.commands")


def evaluate(config: Any, workdir: str, *, num_samples: int | None = None,
             out: str | None = None, seed: int = 0) -> dict:
    """Sample and compute the quality metric of the dataset (:func:`config.get_quality_fn
    <scoresde_jax.config.get_quality_fn>`): ``{'samples': png, 'quality': metrics}``."""
    n = config_lib.eval_num_samples(config, num_samples)
    samples, path = sample(config, workdir, num_samples=n, out=out, seed=seed)
    return {"samples": path, "quality": config_lib.get_quality_fn(config)(samples)}


def train_and_evaluate(config: Any, workdir: str, *, num_samples: int | None = None,
                       **train_kwargs) -> dict:
    """Train, then sample with the EMA parameters and compute the quality metric.

    Returns ``{'step', 'train', 'samples', 'quality', 'train_seconds', 'seconds'}`` and writes it
    to ``<workdir>/eval/results.json``.
    """
    t0 = time.perf_counter()
    result = train(config, workdir, **train_kwargs)
    train_seconds = time.perf_counter() - t0
    n = config_lib.eval_num_samples(config, num_samples)
    samples, png = sample(config, workdir, num_samples=n, seed=config_lib.run_seed(config) + 1,
                          model=train_kwargs.get("model"))
    quality = config_lib.get_quality_fn(config)(samples)
    out = {"step": result.step, "train": result.metrics, "samples": png, "quality": quality,
           "train_seconds": train_seconds, "seconds": time.perf_counter() - t0}
    if distributed.is_main_process():
        path = os.path.join(os.path.abspath(workdir), "eval", "results.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        log.info("Results: %s (written to %s)", json.dumps(quality), path)
    return out
