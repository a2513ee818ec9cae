"""``scoresde likelihood``: negative log-likelihood of a data split under a workdir's EMA
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
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from scoresde_jax import likelihood as likelihood_lib
from scoresde_jax import parameterization
from scoresde_jax.jobs import common
from scoresde_jax.jobs.rounds import record_digest, run_rounds
from scoresde_jax.training import distributed, restore_params
from scoresde_jax.utils import flat_dim

log = logging.getLogger("scoresde_jax.jobs")


class LikelihoodOptions(NamedTuple):
    """The options of :func:`likelihood` (built by
    :func:`scoresde_jax.config.likelihood_options`)."""

    batch_size: int = 64
    num_examples: int | None = None  # default: the whole split (vector data: eval.num_samples)
    split: str = "test"
    seed: int = 0
    repeats: int = 1
    dequantize: bool = True  # uniform dequantization of 8-bit images (never for vector data)
    checkpoint: int | None = None
    data_dir: str | None = None
    progress: bool = True
    overwrite: bool = False


def likelihood(setup: Any, options: LikelihoodOptions, workdir: str, *,
               params: Any = None) -> dict:
    """NLL of ``options.split`` under the EMA parameters of ``workdir`` (or ``params`` given
    directly). Returns (and writes to ``<rounds>/results.json``) ``{'bpd', 'bpd_stderr',
    'nll_nats_per_dim', 'nll_stderr', 'num_examples', 'repeats', 'dequantize', 'offset', 'step',
    'rounds'}``."""
    s, o = setup, options
    d = s.data
    step = None
    if params is None:
        params, step = restore_params(workdir, s.abstract_state(), step=o.checkpoint)
    offset = 0.0 if d.vector else likelihood_lib.bpd_offset(d.centered)
    deq = (not d.vector) and bool(o.dequantize)
    bs = int(o.batch_size)
    distributed.check_batch_size(bs, s.mesh, name="eval.batch_size")
    total, read = d.split_reader(o.split, batch_size=bs, data_dir=o.data_dir,
                                 num_examples=o.num_examples)
    if total < 1:
        raise ValueError(f"the {o.split} split gave no example; lower eval.batch_size.")
    lik = likelihood_lib.get_likelihood_fn(
        s.sde, lambda p: parameterization.get_score_fn(
            s.sde, parameterization.get_model_fn(s.model, p), continuous=s.continuous),
        centered=d.centered, bits=False, offset=0.0 if d.vector else None, dequantize=deq)
    scaler = d.scaler()
    key = jax.random.PRNGKey(o.seed)

    def make_round(k: int, n: int) -> dict:
        x = np.asarray(read(k, n), np.float32)
        if n < bs:  # pad to one compiled shape; the padding is dropped
            x = np.concatenate([x, np.repeat(x[-1:], bs - n, axis=0)])
        x = np.asarray(scaler(x))
        out = []
        for r in range(o.repeats):
            k_probe, k_deq = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, k), r))
            xr = likelihood_lib.uniform_dequantize(x, k_deq, centered=d.centered) if deq else x
            res = lik(params, distributed.global_batch(xr, s.mesh), k_probe)
            out.append(np.asarray(distributed.to_host(res.logp)).reshape(-1)[:n])
        logp = np.stack(out, axis=1)
        if not np.isfinite(logp).all():
            raise ValueError(f"the log-likelihood of round {k} is NaN/inf: the checkpoint has "
                             "diverged or the ODE solve failed; pick another --checkpoint.")
        return {"logp": logp}

    record = common.job_record("likelihood", s, o, step=step, params=params)
    tag = f"{o.split}_seed_{o.seed}_repeats_{o.repeats}_deq_{int(deq)}_{record_digest(record)}"
    out_dir = os.path.join(os.path.abspath(workdir), "likelihood", f"step_{step}_{tag}")
    t0 = time.perf_counter()
    logp = run_rounds(out_dir, num_items=total, batch_size=bs, make_round=make_round,
                      record=record, overwrite=o.overwrite, desc="likelihood",
                      progress=o.progress)["logp"]
    dim = flat_dim((1,) + tuple(s.input_shape[1:]))
    nll = -logp.mean(axis=1) / dim
    bpd = nll / math.log(2.0) + offset
    se = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float("nan")
    result = {**common.header("likelihood", step=step, seed=o.seed, options=o,
                              seconds=time.perf_counter() - t0),
              "bpd": float(bpd.mean()), "bpd_stderr": se / math.log(2.0),
              "nll_nats_per_dim": float(nll.mean()), "nll_stderr": se,
              "num_examples": int(len(nll)), "repeats": o.repeats, "dequantize": deq,
              "offset": offset, "split": o.split, "rounds": out_dir}
    common.write_results(os.path.join(out_dir, "results.json"), result)
    log.info("likelihood: %.4f +- %.4f bits/dim over %d examples", result["bpd"],
             result["bpd_stderr"], result["num_examples"])
    return result
