"""Moved to :mod:`scoresde_jax.training.distributed`; this alias keeps ``scoresde_jax.distributed`` imports working."""

from __future__ import annotations

from scoresde_jax.training.distributed import DATA_AXIS, batch_sharding, check_batch_size, global_batch, initialize, is_main_process, make_mesh, put_replicated, replicated, to_host  # noqa: F401
