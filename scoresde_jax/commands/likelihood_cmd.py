"""The ``likelihood`` job: bits/dim of the eval split under a workdir's EMA parameters."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax.training import distributed, restore_params


def likelihood(config: Any, workdir: str, *, num_batches: int | None = None,
               data_dir: str | None = None, model: Any = None, seed: int = 0) -> dict:
    """Mean bits/dim of the eval split under the latest EMA parameters (probability-flow ODE,
    Hutchinson divergence). Returns ``{'bpd', 'num_examples', 'step'}``."""
    s = config_lib.setup(config, model=model)
    params, step = restore_params(workdir, s.abstract_state())
    lik = config_lib.get_likelihood_fn(config, s)
    it = config_lib.get_dataset(config, split="test", data_dir=data_dir)
    scaler = config_lib.get_data_scaler(config)
    bpds = []
    for i, batch in enumerate(it):
        if num_batches is not None and i >= num_batches:
            break
        x = distributed.global_batch(scaler(np.asarray(batch["image"])), s.mesh)
        res = lik(params, x, jax.random.PRNGKey(seed + i))
        bpds.append(np.asarray(distributed.to_host(res.bpd)).reshape(-1))
    if not bpds:
        raise ValueError("The eval split gave no batch; lower eval.batch_size.")
    allb = np.concatenate(bpds)
    return {"bpd": float(allb.mean()), "num_examples": int(allb.size), "step": step}
