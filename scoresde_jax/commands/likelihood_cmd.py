"""The ``likelihood`` job: negative log-likelihood of the whole test split under a workdir's EMA
parameters (probability-flow ODE, Hutchinson divergence), in resumable rounds.

Round ``k`` holds ``logp`` ``(n, repeats)`` of examples ``[k B, k B + n)``; repeat ``r`` draws its
probe (and its dequantization noise) from ``fold_in(fold_in(PRNGKey(seed), k), r)``, so a resumed
job equals an unbroken one. Per example the repeats are averaged; the job reports the mean over
examples and its standard error ``std / sqrt(N)``:

* 8-bit images: uniform dequantization ``(k + u) / 256`` on by default (paper, Table 2), bits/dim
  ``-log p(x) / (D ln 2) + 8 - log2(scale)`` (:func:`scoresde_jax.likelihood.bpd_offset`);
* continuous vector data: ``nll = -log p(x) / D`` nats/dim and ``bpd = nll / ln 2``, no offset.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax import likelihood as likelihood_lib
from scoresde_jax.commands.rounds import run_rounds
from scoresde_jax.commands.stats_cmd import split_reader
from scoresde_jax.config.run import eval_options, likelihood_data
from scoresde_jax.training import distributed, restore_params
from scoresde_jax.utils import flat_dim

log = logging.getLogger("scoresde_jax.commands")


def likelihood(config: Any, workdir: str, *, num_batches: int | None = None,
               data_dir: str | None = None, model: Any = None, seed: int = 0,
               repeats: int | None = None, dequantize: bool | None = None,
               num_examples: int | None = None, batch_size: int | None = None,
               split: str = "test", progress: bool = True, params: Any = None,
               checkpoint: int | None = None) -> dict:
    """NLL of ``split`` (all of it, or ``num_examples`` / ``num_batches`` batches) under the
    latest EMA parameters of ``workdir`` (or ``params`` given directly, e.g. for tests).

    Returns ``{'bpd', 'bpd_stderr', 'nll_nats_per_dim', 'nll_stderr', 'num_examples', 'repeats',
    'dequantize', 'offset', 'step', 'rounds'}``.
    """
    opts = eval_options(config)
    s = config_lib.setup(config, model=model)
    step = None
    if params is None:
        params, step = restore_params(workdir, s.abstract_state(), step=checkpoint)
    vector, centered, offset = likelihood_data(config)
    repeats = int(repeats or opts.get("repeats", 1))
    deq = (not vector) and bool(opts.get("dequantize", True) if dequantize is None else dequantize)
    bs = int(batch_size or opts.get("batch_size", 64))
    distributed.check_batch_size(bs, s.mesh, name="eval.batch_size")
    if num_batches is not None:
        num_examples = int(num_batches) * bs
    if vector and num_examples is None:
        num_examples = config_lib.eval_num_samples(config)
    total, read = split_reader(config, split, batch_size=bs, data_dir=data_dir,
                               num_examples=num_examples)
    if total < 1:
        raise ValueError(f"the {split} split gave no example; lower eval.batch_size.")
    lik = config_lib.get_likelihood_fn(config, s, bits=False)
    scaler = config_lib.get_data_scaler(config)
    key = jax.random.PRNGKey(seed)

    def make_round(k: int, n: int) -> dict:
        x = np.asarray(read(k, n), np.float32)
        if n < bs:  # pad to one compiled shape; the padding is dropped
            x = np.concatenate([x, np.repeat(x[-1:], bs - n, axis=0)])
        x = x if vector else np.asarray(scaler(x))
        out = []
        for r in range(repeats):
            k_probe, k_deq = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, k), r))
            xr = likelihood_lib.uniform_dequantize(x, k_deq, centered=centered) if deq else x
            res = lik(params, distributed.global_batch(xr, s.mesh), k_probe)
            out.append(np.asarray(distributed.to_host(res.logp)).reshape(-1)[:n])
        return {"logp": np.stack(out, axis=1)}

    tag = f"{split}_seed_{seed}_batch_{bs}_repeats_{repeats}_deq_{int(deq)}"
    out_dir = os.path.join(os.path.abspath(workdir), "likelihood", f"step_{step}_{tag}")
    logp = run_rounds(out_dir, num_items=total, batch_size=bs, make_round=make_round,
                      desc="likelihood", progress=progress)["logp"]
    dim = flat_dim((1,) + tuple(s.input_shape[1:]))
    nll = -logp.mean(axis=1) / dim
    bpd = nll / math.log(2.0) + offset
    se = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float("nan")
    result = {"bpd": float(bpd.mean()), "bpd_stderr": se / math.log(2.0),
              "nll_nats_per_dim": float(nll.mean()), "nll_stderr": se,
              "num_examples": int(len(nll)), "repeats": repeats, "dequantize": deq,
              "offset": offset, "step": step, "rounds": out_dir}
    log.info("likelihood: %.4f +- %.4f bits/dim over %d examples", result["bpd"],
             result["bpd_stderr"], result["num_examples"])
    return result
