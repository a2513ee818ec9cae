"""The jitted training and evaluation steps over a device mesh.

One call of the compiled train function runs ``n`` optimizer steps with ``lax.scan`` (``n`` is the
leading axis of the batches: ``training.n_jitted_steps`` in the configs); each step may accumulate
``grad_accum_steps`` micro-batches through ``optax.MultiSteps``. The state is replicated and the
batch sharded over the mesh axis ``'data'`` (:mod:`scoresde_jax.training.distributed`), so the same
code runs on one CPU, eight devices or several hosts and gives the same numbers. Step ``s`` draws its
randomness from ``fold_in(fold_in(rng, TRAIN_STREAM), s)``, so a resumed run reproduces an unbroken
one.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scoresde_jax.training import distributed
from scoresde_jax.training.state import TrainState, ema_update

# Independent random streams of one run: fold_in(fold_in(state.rng, STREAM), step).
TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM = 0, 1, 2

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]


class StepMetrics(NamedTuple):
    """Per-step training metrics (stacked to ``(n_jitted_steps,)`` by the compiled function)."""

    loss: jax.Array
    grad_norm: jax.Array


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or inf; the last good checkpoint is kept."""


def stream_key(rng: jax.Array, stream: int, step: jax.Array | int) -> jax.Array:
    """``fold_in(fold_in(rng, stream), step)``: the key of one step of one random stream."""
    return jax.random.fold_in(jax.random.fold_in(rng, stream), step)


def _micro_batches(batch: Any, k: int) -> Any:
    """``(B, ...) -> (k, B/k, ...)`` with micro-batch ``j`` = rows ``j, j+k, ...`` (every device keeps a share)."""

    def split(x):
        if x.shape[0] % k:
            raise ValueError(
                f"Batch of {x.shape[0]} does not split into training.grad_accum_steps={k} micro-batches; "
                "make training.batch_size a multiple of grad_accum_steps * device count."
            )
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_step_fn(
    loss_fn: LossFn, *, grad_accum_steps: int = 1
) -> Callable[[TrainState, Any], tuple[TrainState, StepMetrics]]:
    """One optimizer step ``(state, batch) -> (state, StepMetrics)`` (not jitted; scanned by the caller).

    With ``grad_accum_steps = k > 1`` the state's ``tx`` must be an ``optax.MultiSteps`` over ``k``
    steps (:func:`scoresde_jax.config.get_optimizer` builds it): the batch is split into ``k``
    micro-batches fed to ``tx.update`` in turn, and the ``k``-th call applies the mean gradient.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(state: TrainState, batch: Any) -> tuple[TrainState, StepMetrics]:
        key = stream_key(state.rng, TRAIN_STREAM, state.step)
        if grad_accum_steps == 1:
            (loss, _), grads = grad_fn(state.params, batch, key)
            return state.apply_gradients(grads), StepMetrics(loss, optax.tree.norm(grads))

        def micro(carry, xs):
            params, opt_state = carry
            i, mb = xs
            (loss, _), grads = grad_fn(state.params, mb, jax.random.fold_in(key, i))
            updates, opt_state = state.tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, optax.tree.norm(grads))

        xs = (jnp.arange(grad_accum_steps), _micro_batches(batch, grad_accum_steps))
        (params, opt_state), (losses, norms) = jax.lax.scan(micro, (state.params, state.opt_state), xs)
        new = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            ema_params=ema_update(state.ema_params, params, rate=state.ema_rate),
        )
        return new, StepMetrics(jnp.mean(losses), jnp.mean(norms))

    return step_fn


def make_train_fn(
    loss_fn: LossFn, mesh: jax.sharding.Mesh, *, grad_accum_steps: int = 1, donate: bool = True,
    compiler_options: dict | None = None,
) -> Callable[[TrainState, Any], tuple[TrainState, StepMetrics]]:
    """Jitted ``(state, batches) -> (state, StepMetrics)`` running ``batches.shape[0]`` steps with ``lax.scan``.

    ``batches`` has shape ``(n_jitted_steps, B, ...)`` and is sharded on axis 1 over ``'data'``; the
    state is replicated. Compiles once per batch shape, with ``compiler_options`` (default
    :func:`scoresde_jax.training.distributed.compiler_options` of ``mesh``; ``{}``: XLA's defaults).
    """
    step_fn = make_step_fn(loss_fn, grad_accum_steps=grad_accum_steps)

    def multi_step(state, batches):
        if jax.tree.leaves(batches)[0].shape[0] == 1:
            # One step: no scan. XLA:CPU runs the backward pass of conv U-Nets much slower inside
            # lax.scan (benchmarks/README.md): keep training.n_jitted_steps = 1 on CPU, 5 on
            # GPU/TPU.
            state, metrics = step_fn(state, jax.tree.map(lambda x: x[0], batches))
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(step_fn, state, batches)

    rep = distributed.replicated(mesh)
    return jax.jit(
        multi_step,
        in_shardings=(rep, distributed.batch_sharding(mesh, leading=1)),
        out_shardings=(rep, rep),
        donate_argnums=(0,) if donate else (),
        compiler_options=(distributed.compiler_options(mesh) if compiler_options is None
                          else compiler_options) or None,
    )


def make_eval_fn(loss_fn: LossFn, mesh: jax.sharding.Mesh) -> Callable[[TrainState, Any], jax.Array]:
    """Jitted ``(state, batch) -> loss`` of the EMA parameters (``loss_fn`` built with ``train=False``)."""

    def eval_step(state, batch):
        loss, _ = loss_fn(state.ema_params, batch, stream_key(state.rng, EVAL_STREAM, state.step))
        return loss

    rep = distributed.replicated(mesh)
    return jax.jit(eval_step, in_shardings=(rep, distributed.batch_sharding(mesh)), out_shardings=rep)
