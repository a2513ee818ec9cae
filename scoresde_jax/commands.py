"""The jobs run on a workdir, one function each: what ``scoresde <command>`` and
``python -m experiments.main`` call.

=================  =====================================================================
job                function
=================  =====================================================================
train              :func:`train` (:func:`train_and_evaluate` adds final samples + metric)
sample             :func:`sample`
eval               :func:`evaluate`
likelihood         :func:`likelihood`
convert            :func:`convert`
=================  =====================================================================

Each takes a config (read only through :mod:`scoresde_jax.config`) and a workdir, and returns a
JSON-able result.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Iterator

import jax
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax import convert as convert_lib
from scoresde_jax.metrics_io import save_samples
from scoresde_jax.training import (
    Checkpointer,
    TrainResult,
    distributed,
    make_eval_fn,
    make_train_fn,
    restore_params,
    train_loop,
)

log = logging.getLogger("scoresde_jax.commands")

__all__ = ["train", "train_and_evaluate", "sample", "evaluate", "likelihood", "convert"]


def _datasets(config: Any, data_dir: str | None) -> tuple[Iterator, Iterator]:
    """Per-process (train, eval) iterators; each host reads its own shard."""
    kw = dict(shard=(jax.process_index(), jax.process_count()), data_dir=data_dir)
    return (config_lib.get_dataset(config, split="train", **kw),
            config_lib.get_dataset(config, split="test", num_epochs=None, **kw))


def train(config: Any, workdir: str, *, model: Any = None,
          datasets: tuple[Iterator, Iterator] | None = None, data_dir: str | None = None,
          mesh: jax.sharding.Mesh | None = None, stop_at: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or resume) the score model of ``config`` under ``workdir``.

    ``model`` / ``datasets`` replace ``create_model(config)`` / the config's (train, eval) data
    iterators (tests, custom data); ``stop_at`` stops early at that step after saving (a
    preemption). Raises :class:`~scoresde_jax.training.NonFiniteLossError` on a NaN/inf loss.
    """
    s = config_lib.setup(config, model=model, mesh=mesh)
    options = config_lib.loop_options(config)
    train_iter, eval_iter = datasets if datasets is not None else _datasets(config, data_dir)
    return train_loop(
        workdir,
        train_fn=make_train_fn(config_lib.get_loss_fn(config, s, train=True), s.mesh,
                               grad_accum_steps=s.grad_accum_steps),
        eval_fn=make_eval_fn(config_lib.get_loss_fn(config, s, train=False), s.mesh)
        if options.eval_freq else None,
        init_state=s.init_state, abstract_state=s.abstract_state(), train_iter=train_iter,
        eval_iter=eval_iter, mesh=s.mesh, options=options, batch_size=s.input_shape[0],
        preprocess=config_lib.get_data_scaler(config), sample_fn=config_lib.snapshot_sample_fn(config, s), stop_at=stop_at,
        progress=progress, description=type(s.model).__name__,
    )


def sample(config: Any, workdir: str, *, num_samples: int = 64, out: str | None = None,
           seed: int = 0, model: Any = None) -> tuple[np.ndarray, str]:
    """``num_samples`` samples with the latest EMA parameters of ``workdir`` and the sampler of
    ``config.sampling``, written as a PNG grid (a scatter plot for 2-D data) and ``.npy``.

    Returns ``(samples, png_path)``: images ``(N, H, W, C)`` in ``[0, 1]`` or vectors ``(N, D)``.
    """
    s = config_lib.setup(config, model=model)
    params, step = restore_params(workdir, s.abstract_state())
    sample_fn = config_lib.make_sample_fn(config, s, num_samples=num_samples)
    samples = distributed.to_host(sample_fn(params, jax.random.PRNGKey(seed)))
    out = out or os.path.join(os.path.abspath(workdir), "samples", f"final_{step}", "sample.png")
    if distributed.is_main_process():
        save_samples(samples, out)
        log.info("Wrote %d samples of step %d to %s", num_samples, step, out)
    return samples, out


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


def convert(config: Any, checkpoint: str, workdir: str, *, model: Any = None) -> dict:
    """An official score_sde checkpoint as an Orbax checkpoint of this library under ``workdir``.

    ``params`` / ``ema_params`` come from the official ``optimizer.target`` / ``params_ema``, the
    step is the official one; the optimizer state starts fresh (the official Adam moments are not
    carried over).
    """
    s = config_lib.setup(config, model=model)
    official = convert_lib.read_official_checkpoint(checkpoint)
    ema = convert_lib.load_official_checkpoint(checkpoint, config, ema=True)
    raw = convert_lib.load_official_checkpoint(checkpoint, config, ema=False)
    params = distributed.put_replicated(raw, s.mesh)
    state = s.init_state().replace(
        step=distributed.put_replicated(np.int32(official.step), s.mesh),
        params=params,
        ema_params=distributed.put_replicated(ema, s.mesh),
        opt_state=jax.jit(s.tx.init, out_shardings=distributed.replicated(s.mesh))(params),
    )
    with Checkpointer(workdir, async_save=False) as ckpt:
        path = ckpt.save(int(official.step), state, {})
    log.info("Converted %s (step %d) into %s", official.path, official.step, path)
    return {"step": int(official.step), "checkpoint": path, "source": str(official.path)}
