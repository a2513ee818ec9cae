"""``scoresde train``: train (or resume) a score model on a workdir, then by default report its
sample quality with the ``eval`` job's report (:func:`scoresde_jax.jobs.eval.evaluate`).

The loop itself (checkpoints, preemption, prefetch, metrics) is
:func:`scoresde_jax.training.train_loop`; this job builds its arguments from a
:class:`~scoresde_jax.config.Setup` and :class:`TrainOptions`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator, Mapping, NamedTuple

import jax

from scoresde_jax import losses
from scoresde_jax.jobs import common
from scoresde_jax.jobs.eval import EvalOptions, evaluate
from scoresde_jax.jobs.generate import SamplerSpec, make_generator
from scoresde_jax.training import (LoopOptions, TrainResult, make_eval_fn, make_train_fn,
                                   train_loop)


class TrainOptions(NamedTuple):
    """The options of :func:`train` (built by :func:`scoresde_jax.config.train_options`)."""

    loop: LoopOptions
    loss: Mapping[str, Any]  # keyword options of losses.get_loss_fn / get_classifier_loss_fn
    classifier: bool = False  # train a noise-conditional classifier (cross-entropy objective)
    snapshot: SamplerSpec | None = None  # the sampler of snapshot samples, None: no snapshots
    snapshot_num_samples: int = 64
    record: Any = None  # the resolved config, saved as <workdir>/config.json
    evaluate: EvalOptions | None = None  # the final report, None: only train
    data_dir: str | None = None
    progress: bool = True
    stop_at: int | None = None  # stop early at this step after saving (a preemption)
    allow_config_change: bool = False  # continue checkpoints under another model/SDE/data config


def _loss_fn(setup: Any, options: TrainOptions, *, train: bool):
    if options.classifier:
        return losses.get_classifier_loss_fn(setup.sde, setup.model, train=train, **options.loss)
    return losses.get_loss_fn(setup.sde, setup.model, train=train, **options.loss)


def _datasets(setup: Any, data_dir: str | None) -> tuple[Iterator, Iterator]:
    """Per-process (train, eval) iterators; each host reads its own shard."""
    kw = dict(shard=(jax.process_index(), jax.process_count()), data_dir=data_dir)
    return (setup.data.dataset(split="train", **kw),
            setup.data.dataset(split="test", num_epochs=None, **kw))


def train(setup: Any, options: TrainOptions, workdir: str, *,
          datasets: tuple[Iterator, Iterator] | None = None) -> TrainResult:
    """Train (or resume) ``setup``'s model under ``workdir``; ``datasets`` replace the (train,
    eval) iterators of ``setup.data`` (tests, custom data). Raises
    :class:`~scoresde_jax.training.NonFiniteLossError` on a NaN/inf loss."""
    s, o = setup, options
    train_iter, eval_iter = datasets if datasets is not None else _datasets(s, o.data_dir)
    sample_fn = None
    if o.snapshot is not None:
        gen = make_generator(s, o.snapshot, batch_size=o.snapshot_num_samples)
        sample_fn = lambda params, rng: common.floats(gen.from_rng(params, rng)[0])  # noqa: E731
    return train_loop(
        workdir,
        train_fn=make_train_fn(_loss_fn(s, o, train=True), s.mesh,
                               grad_accum_steps=s.grad_accum_steps),
        eval_fn=make_eval_fn(_loss_fn(s, o, train=False), s.mesh) if o.loop.eval_freq else None,
        init_state=s.init_state, abstract_state=s.abstract_state(), train_iter=train_iter,
        eval_iter=eval_iter, mesh=s.mesh, options=o.loop, batch_size=s.input_shape[0],
        preprocess=s.data.scaler(), sample_fn=sample_fn, stop_at=o.stop_at,
        progress=o.progress, description=type(s.model).__name__, config=o.record,
        allow_config_change=o.allow_config_change,
    )


def train_and_evaluate(setup: Any, options: TrainOptions, workdir: str, *,
                       datasets: tuple[Iterator, Iterator] | None = None) -> dict:
    """:func:`train`, then (unless ``options.evaluate`` is None) the ``eval`` job's report on the
    final checkpoint. Returns ``{'step', 'train', 'train_seconds', 'seconds'}`` plus the report's
    keys (``quality``, ``reference``, ``grid``, ...)."""
    t0 = time.perf_counter()
    result = train(setup, options, workdir, datasets=datasets)
    out = {"step": result.step, "train": result.metrics, "workdir": result.workdir,
           "train_seconds": time.perf_counter() - t0}
    if options.evaluate is not None:
        report = evaluate(setup, options.evaluate, workdir)
        out.update({k: v for k, v in report.items() if k not in common.HEADER})
    opts = options._replace(record=None)  # the config is in config.json
    out = {**common.header("train", step=result.step, seed=setup.seed, options=opts,
                           seconds=time.perf_counter() - t0), **out}
    common.write_results(os.path.join(result.workdir, "train_results.json"), out)
    return out
