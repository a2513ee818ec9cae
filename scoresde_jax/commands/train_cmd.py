"""The ``train`` job: build everything from a config and run the training loop on a workdir."""

from __future__ import annotations

from typing import Any, Iterator

import jax

from scoresde_jax import config as config_lib
from scoresde_jax.training import TrainResult, make_eval_fn, make_train_fn, train_loop


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
        progress=progress, description=type(s.model).__name__, config=config,
    )
