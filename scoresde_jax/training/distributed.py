"""Data parallelism the current JAX way: one ``jax.jit`` over a device mesh.

The batch is sharded over a 1-D mesh axis ``'data'`` (``NamedSharding(mesh, P('data'))``) and the train
state is replicated (``P()``); XLA's SPMD partitioner inserts the gradient all-reduce (what ``pmap``
code writes as ``lax.pmean``). Multi-host runs call :func:`initialize` (``jax.distributed``) first; each
process then feeds its own slice of the global batch (:func:`global_batch`) and process 0 is the only
writer of logs (:func:`is_main_process`). Orbax coordinates checkpoint writes across processes itself.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Start ``jax.distributed`` when a multi-process run is requested; a no-op otherwise.

    A run is multi-process when ``num_processes > 1`` is passed, or the environment says so
    (``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``), or on a cluster that
    ``jax.distributed.initialize()`` auto-detects (``SCORESDE_AUTO_DISTRIBUTED=1``, e.g. Cloud TPU, SLURM).
    Must run before any other JAX call. Returns True when ``jax.distributed`` was initialized.
    """
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and env.get("JAX_NUM_PROCESSES"):
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and env.get("JAX_PROCESS_ID"):
        process_id = int(env["JAX_PROCESS_ID"])
    if num_processes is not None and num_processes > 1:
        if coordinator_address is None or process_id is None:
            raise ValueError(
                f"num_processes={num_processes} needs coordinator_address (host:port) and process_id; "
                "pass them or set JAX_COORDINATOR_ADDRESS / JAX_PROCESS_ID."
            )
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return True
    if env.get("SCORESDE_AUTO_DISTRIBUTED") == "1":
        jax.distributed.initialize()
        return True
    return False


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over all (global) devices with the axis ``'data'`` (Auto axis type)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device (params, optimizer state, EMA)."""
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, *, leading: int = 0) -> NamedSharding:
    """Shard axis ``leading`` of every leaf over ``'data'`` (``leading=1`` for ``(n_steps, B, ...)``)."""
    return NamedSharding(mesh, P(*([None] * leading), DATA_AXIS))


def compiler_options(mesh: Mesh) -> dict:
    """XLA options of the training programs (the one-off init and the train step) for ``mesh``'s
    platform: on CPU, LLVM's optimizer at level 1 of 3; elsewhere XLA's defaults.

    On CPU the convolutions and matmuls run in library kernels, so LLVM's level only shapes the
    loops around them (``benchmarks/bench_startup.py``, 2 cores, digits DDPM++; no fast-math at
    any level, ``tests/test_train_state.py``):

    * the init (~5 random-number kernels per parameter, each run once): the same parameters bit
      for bit; compile + run 11.4 s -> 5.7 s, NCSN++ CIFAR-10 20.4 s -> 14.7 s. Level 0
      compiles digits faster still but runs the 62.7M random numbers of NCSN++ 5x slower, so
      it is used for small models only (:func:`init_compiler_options`).
    * the train step: the same numbers to float32 rounding (a few gradient sums are vectorized
      in another order: a few ulp); less compile time, the steady step unchanged (the
      benchmark's ``step_options`` rows).
    """
    if mesh.devices.flat[0].platform != "cpu":
        return {}
    return {"xla_backend_optimization_level": 1}


# Up to this many parameters the CPU init program compiles at LLVM level 0 (init_compiler_options)
SMALL_INIT_PARAMS = 8_000_000


def init_compiler_options(mesh: Mesh, num_params: int) -> dict:
    """XLA options of the one-off init program of a model with ``num_params`` parameters: those of
    :func:`compiler_options`, except LLVM level 0 on CPU up to :data:`SMALL_INIT_PARAMS`
    parameters. Level 0 compiles the init's per-parameter random-number kernels faster (digits
    DDPM++: the init's trace, compile and run 5.3 s -> 4.4 s, ``benchmarks/bench_startup.py``'s
    ``step_O1`` / ``init_small`` rows) and runs them slower (5x for NCSN++'s 62.7M parameters),
    with the same parameters bit for bit (``tests/test_train_state.py``).
    """
    options = compiler_options(mesh)
    if options and num_params <= SMALL_INIT_PARAMS:
        return {**options, "xla_backend_optimization_level": 0}
    return options


def is_main_process() -> bool:
    """True on the one process that writes logs, images and metric files."""
    return jax.process_index() == 0


def check_batch_size(batch_size: int, mesh: Mesh, *, name: str = "training.batch_size") -> int:
    """Validate that the global batch splits evenly over devices and processes; return the per-process size."""
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(
            f"{name}={batch_size} is not divisible by the number of devices ({n_dev}); "
            f"use a multiple of {n_dev}, e.g. {max(n_dev, (batch_size // n_dev) * n_dev)}."
        )
    return batch_size // jax.process_count()


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Place a host pytree (identical on every process) replicated on the mesh; works multi-host."""
    sharding = replicated(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def global_batch(local_batch: Any, mesh: Mesh, *, leading: int = 0) -> Any:
    """Assemble the global batch from each process's local slice (sharded over ``'data'`` on axis ``leading``)."""
    sharding = batch_sharding(mesh, leading=leading)
    if jax.process_count() == 1:  # the same array, a quarter of the host time (a per-step cost)
        return jax.device_put(jax.tree.map(np.asarray, local_batch), sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def to_host(x: Any) -> Any:
    """Fetch a replicated (or fully addressable) array pytree as numpy on every process."""

    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)

    return jax.tree.map(get, x)

