"""Train state: params, EMA params, optax state, step and the run's base RNG key.

The EMA follows score_sde: ``ema <- ema * rate + (1 - rate) * params`` after every optimizer update
(rate ``ema_rate``, ``config.model.ema_rate`` in the configs: 0.9999 for the paper's CIFAR-10 runs, 0.999 for small ones).
The key stored in the state is the *base* key; step ``s`` of a random stream uses
``fold_in(fold_in(rng, stream), s)`` (:func:`scoresde_jax.training.steps.stream_key`), so a run resumed at step
``s`` draws exactly what an unbroken run would.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from flax import struct

from scoresde_jax.training import distributed


class TrainState(struct.PyTreeNode):
    """Everything a training run needs to continue (a pytree; ``tx`` and ``ema_rate`` are static)."""

    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: optax.OptState
    rng: jax.Array
    tx: optax.GradientTransformation = struct.field(pytree_node=False)
    ema_rate: float = struct.field(pytree_node=False, default=0.999)

    @classmethod
    def create(
        cls, *, params: Any, tx: optax.GradientTransformation, rng: jax.Array, ema_rate: float
    ) -> "TrainState":
        """A fresh state at step 0 with ``ema_params = params``."""
        if not 0.0 <= ema_rate < 1.0:
            raise ValueError(f"ema_rate must be in [0, 1), got {ema_rate}; set config.model.ema_rate.")
        if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
            rng = jax.random.key_data(rng)
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            ema_params=jax.tree.map(jnp.copy, params),
            opt_state=tx.init(params),
            rng=jnp.asarray(rng),
            tx=tx,
            ema_rate=float(ema_rate),
        )

    def apply_gradients(self, grads: Any) -> "TrainState":
        """One optimizer update, then the EMA update; increments ``step``."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(
            step=self.step + 1,
            params=params,
            opt_state=opt_state,
            ema_params=ema_update(self.ema_params, params, rate=self.ema_rate),
        )


def ema_update(ema_params: Any, params: Any, *, rate: float) -> Any:
    """``ema * rate + (1 - rate) * params`` leaf by leaf."""
    return jax.tree.map(lambda e, p: e * rate + (1.0 - rate) * p, ema_params, params)


def create_train_state(
    rng: jax.Array,
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    *,
    input_shape: tuple[int, ...],
    ema_rate: float,
    label_dtype: Any = jnp.float32,
) -> TrainState:
    """Initialize ``model`` on a dummy batch ``(x: input_shape, labels: (B,))`` and wrap it in a TrainState.

    ``rng`` is split into the parameter-init key and the run's base key for per-step randomness.
    """
    init_key, params_dropout, base = jax.random.split(rng, 3)
    x = jnp.zeros(input_shape, jnp.float32)
    labels = jnp.zeros(input_shape[:1], label_dtype)
    variables = model.init({"params": init_key, "dropout": params_dropout}, x, labels, train=False)
    if set(variables) - {"params"}:
        raise ValueError(
            f"Model has non-parameter collections {sorted(set(variables) - {'params'})}; "
            "the train state keeps only 'params' (score models here use no batch statistics)."
        )
    return TrainState.create(params=variables["params"], tx=tx, rng=base, ema_rate=ema_rate)


def init_state(
    rng: jax.Array,
    model: flax.linen.Module,
    tx: optax.GradientTransformation,
    *,
    example_shape: tuple[int, ...],
    ema_rate: float,
    mesh: jax.sharding.Mesh,
    on_lowered: Callable[[], None] | None = None,
) -> TrainState:
    """The step-0 state computed under jit straight into the replicated sharding of ``mesh`` (the
    same on every host); ``example_shape`` is the shape of one example, ``(H, W, C)`` or ``(D,)``.

    ``on_lowered()`` is called once the program is traced, before XLA compiles it (outside
    Python's lock): the train loop starts tracing the train step there, so the two overlap."""
    init = _init_program(model, tx, example_shape=example_shape, ema_rate=ema_rate, mesh=mesh)
    if isinstance(rng, jax.core.Tracer):  # inside a transformation: part of the caller's program
        return init(rng)
    lowered = init.lower(rng)
    if on_lowered is not None:
        on_lowered()
    num_params = sum(x.size for x in jax.tree.leaves(lowered.out_info.params))
    return lowered.compile(distributed.init_compiler_options(mesh, num_params))(rng)


def _init_program(model, tx, *, example_shape, ema_rate, mesh):
    """The jitted init, one per (model, tx, shape, rate, mesh): ``abstract_state`` and a new run's
    ``init_state`` then share one tracing (JAX caches it per jitted function)."""
    args = (model, tx, tuple(example_shape), float(ema_rate), mesh)
    try:
        return _shared_init_program(*args)
    except TypeError:  # an unhashable model (e.g. a list-valued field): a program of its own
        return _new_init_program(*args)


def _new_init_program(model, tx, example_shape, ema_rate, mesh):
    create = functools.partial(create_train_state, model=model, tx=tx,
                               input_shape=(1, *example_shape), ema_rate=ema_rate)
    return jax.jit(create, out_shardings=distributed.replicated(mesh))


_shared_init_program = functools.lru_cache(maxsize=8)(_new_init_program)


def abstract_state(model: flax.linen.Module, tx: optax.GradientTransformation,
                   **kwargs: Any) -> TrainState:
    """Shapes, dtypes and (replicated) shardings of :func:`init_state`'s result (same keyword
    arguments), without computing it: the target of a checkpoint restore."""
    rep = distributed.replicated(kwargs["mesh"])
    shapes = jax.eval_shape(_init_program(model, tx, **kwargs), jax.random.PRNGKey(0))
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes)
