"""Helpers shared by the test files: a tiny score network, a tiny digits config, and
:func:`run_job`, which runs a job as the CLI does (config -> setup and options -> the job)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np

from scoresde_jax import config as C
from scoresde_jax.jobs import convert, eval, likelihood, sample, stats, train
from scoresde_jax.pretrained import score_sde


class TinyScoreNet(nn.Module):
    """A 2-layer MLP score network ``(x, labels) -> output`` with dropout (test-sized)."""

    width: int = 32

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        h = x.reshape(x.shape[0], -1)
        emb = jnp.sin(jnp.asarray(labels, h.dtype)[:, None] * jnp.arange(1, 9, dtype=h.dtype) / 100.0)
        h = nn.swish(nn.Dense(self.width)(jnp.concatenate([h, emb], -1)))
        h = nn.Dropout(0.1, deterministic=not train)(h)
        return nn.Dense(int(np.prod(x.shape[1:])))(h).reshape(x.shape)


def tiny_config(**training) -> ml_collections.ConfigDict:
    """Official-layout config for 8x8 digits with small frequencies."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.training = ml_collections.ConfigDict(dict(
        batch_size=16, n_iters=8, snapshot_freq=4, log_freq=2, eval_freq=4, snapshot_freq_for_preemption=2,
        snapshot_sampling=False, likelihood_weighting=False, continuous=True, reduce_mean=False, sde="vpsde",
        n_jitted_steps=1, grad_accum_steps=1, keep_checkpoints=0,
    ))
    c.training.update(training)
    c.optim = ml_collections.ConfigDict(dict(
        lr=2e-3, warmup=2, grad_clip=1.0, beta1=0.9, eps=1e-8, weight_decay=0.0, optimizer="Adam"))
    c.model = ml_collections.ConfigDict(dict(
        ema_rate=0.9, sigma_min=0.01, sigma_max=5.0, beta_min=0.1, beta_max=20.0, num_scales=100))
    c.data = ml_collections.ConfigDict(dict(
        dataset="DIGITS", image_size=8, num_channels=1, centered=True, random_flip=False,
        uniform_dequantization=False))
    c.eval = ml_collections.ConfigDict(dict(batch_size=16, num_samples=16))
    c.sampling = ml_collections.ConfigDict(dict(
        method="pc", predictor="euler_maruyama", corrector="none", snr=0.16, n_steps_each=1, noise_removal=True))
    return c


_JOBS = {"train": train.train, "train_and_evaluate": train.train_and_evaluate,
         "sample": sample.sample, "eval": eval.evaluate, "likelihood": likelihood.likelihood,
         "stats": stats.stats, "convert": convert.convert}
_OPTIONS = {"train_and_evaluate": "train"}


def run_job(name: str, config: Any, workdir: str | None = None, *, model: Any = None,
            mesh: Any = None, datasets: Any = None, params: Any = None, **given) -> Any:
    """Job ``name`` on ``config`` as ``scoresde <name>`` runs it; ``model`` / ``mesh`` replace
    the config's network / all devices, ``datasets`` the training iterators, ``params`` the
    likelihood job's checkpoint. ``train`` defaults to ``evaluate=False`` (only training)."""
    if name == "stats":
        return stats.stats(C.data_spec(config), C.stats_options(config, None, **given))
    s = C.setup(config, model=model, mesh=mesh)
    if name == "convert":  # the official checkpoint, read as the CLI reads it
        convert.check_target(workdir, bool(given.get("overwrite")))
        given["official"] = score_sde.load_checkpoint(
            given.get("source") or given.get("checkpoint"), s.abstract_state().params)
    if name == "train":
        given.setdefault("evaluate", False)
    options = C.JOB_OPTIONS[_OPTIONS.get(name, name)](config, s, **given)
    fn = _JOBS[name]
    if name.startswith("train"):
        return fn(s, options, workdir, datasets=datasets)
    if name == "likelihood":
        return fn(s, options, workdir, params=params)
    return fn(s, options) if workdir is None else fn(s, options, workdir)
