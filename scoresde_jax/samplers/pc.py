"""Predictor-corrector sampling (Song et al., ICLR 2021, section 4.2, algorithm 1) as a pure jitted
loop.

The jit boundary and compilation caching
----------------------------------------
A score function is a Python callable, usually a closure over network parameters.  All samplers of
this package (``pc_sample``, ``ode_sample``, the fast samplers) are module-level ``jax.jit``
functions that take the score function as a *pytree argument*:

* a :class:`jax.tree_util.Partial` -- ``Partial(fn, params)`` with ``fn(params, x, t) -> score`` --
  is the recommended form: ``params`` are traced data (not constants baked into the program) and the
  compiled sampler is cached on ``fn`` (compared with ``==``), the SDE, the shape, the dtype and the
  static options.  Repeated calls with the same ``fn`` and new parameters of the same shapes compile
  ONCE.
* a plain callable is wrapped as ``Partial(score_fn)``: it is cached on the function object itself,
  so calling again with the *same* function is free, but a *new* lambda in every notebook cell
  (``pc_sample(lambda x, t: ..., ...)``) compiles every time, with whatever it closes over embedded
  as constants.

:func:`get_pc_sampler` packages the recommended form: ``sampler = get_pc_sampler(sde, shape, fn,
...)`` once, then ``sampler(params, rng)`` any number of times (e.g. training snapshots with the
current EMA parameters).

Arrays, not host values, come back: ``SampleResult(x, nfe)`` with ``nfe`` a scalar int array.  The
loop runs the official order -- at each of the ``N = sde.N`` times ``linspace(T, eps, N)``,
``n_steps`` corrector steps, then one predictor step -- with per-step keys ``fold_in(rng_steps,
i)``.  Data parallelism: call it inside a ``jax.jit`` with the batch of ``x_init`` sharded over a
mesh (or let the output be sharded); the batch-mean norms of the Langevin corrector then are global
means automatically.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.sde import SDE
from scoresde_jax.samplers.correctors import CORRECTORS
from scoresde_jax.samplers.predictors import PREDICTORS

__all__ = ["SampleResult", "pc_sample", "get_pc_sampler", "as_score_pytree"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


class SampleResult(NamedTuple):
    """Samples ``x`` of shape ``(B, *D)`` and the number of score(-network) evaluations ``nfe``."""

    x: jax.Array
    nfe: jax.Array


# --------------------------------------------------------------------------------------------------
# shared argument handling (used by ode.py and fast.py too)
# --------------------------------------------------------------------------------------------------
def as_score_pytree(score_fn: Any) -> Partial:
    """``score_fn`` as a pytree that ``jax.jit`` can take as an argument (see the module
    docstring)."""
    if isinstance(score_fn, Partial):
        return score_fn
    if callable(score_fn):
        return Partial(score_fn)
    raise TypeError(
        f"score_fn must be a callable score_fn(x, t) -> score or a jax.tree_util.Partial, got "
        f"{type(score_fn).__name__}."
    )


def check_sde(sde: Any) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(
            f"sde must be a scoresde_jax.sde SDE (VESDE, VPSDE, subVPSDE), got "
            f"{type(sde).__name__}; build one with scoresde_jax.sde.get_sde(config)."
        )


def check_shape_dtype(
    shape: Sequence[int], x_init: jax.Array | None, dtype
) -> tuple[tuple[int, ...], Any]:
    """Normalize ``shape`` to a tuple, check ``x_init`` against it and pick the floating dtype.

    The dtype is ``dtype`` if given, else that of ``x_init``, else the default float (float32, or
    float64 under ``jax_enable_x64``).
    """
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as e:
        raise TypeError(f"shape must be a sequence of ints (B, *D), got {shape!r}.") from e
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, *D) with positive sizes, got {shape}.")
    if x_init is not None:
        if tuple(x_init.shape) != shape:
            raise ValueError(
                f"x_init has shape {tuple(x_init.shape)} but shape={shape}; pass matching shapes."
            )
        if dtype is None:
            dtype = x_init.dtype
    # canonicalize: float64 requested without jax_enable_x64 runs (and returns) float32, as jnp does
    dtype = jnp.dtype(
        jax.dtypes.canonicalize_dtype(jnp.result_type(float) if dtype is None else dtype)
    )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"samplers need a floating dtype, got {dtype}.")
    return shape, dtype


def initial_state(sde: SDE, shape, dtype, key, x_init):
    """``x_init`` (cast to ``dtype``) or a draw from the prior ``p_T``."""
    if x_init is not None:
        return jnp.asarray(x_init, dtype)
    return sde.prior_sampling(key, shape, dtype=dtype)


def lookup_step_fn(table: dict, name: Any, kind: str) -> Callable:
    """A predictor or corrector by name from ``table`` (or ``name`` itself when it is a function)."""
    if callable(name):
        return name
    key = "none" if name is None else str(name).lower()
    if key not in table:
        raise ValueError(
            f"Unknown {kind} {name!r}; use one of {sorted(table)} or pass a function "
            f"{kind}(score_fn, x, t, z, *, sde, ...) -> (x, x_mean)."
        )
    return table[key]


# --------------------------------------------------------------------------------------------------
# predictor-corrector loop
# --------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit,
    static_argnames=(
        "sde",
        "shape",
        "dtype",
        "predictor",
        "corrector",
        "n_steps",
        "probability_flow",
        "denoise",
    ),
)
def _pc_sample(
    score,
    rng,
    x_init,
    snr,
    eps,
    *,
    sde,
    shape,
    dtype,
    predictor,
    corrector,
    n_steps,
    probability_flow,
    denoise,
):
    k_init, k_steps = jax.random.split(rng)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    timesteps = jnp.linspace(jnp.asarray(sde.T, dtype), jnp.asarray(eps, dtype), sde.N)
    snr = jnp.asarray(snr, dtype)
    use_corrector = getattr(corrector, "nfe", 1) > 0 and n_steps > 0
    use_predictor = getattr(predictor, "nfe", 1) > 0

    def step(i, carry):
        x, x_mean = carry
        t = jnp.full((shape[0],), timesteps[i], dtype)
        k_corr, k_pred = jax.random.split(jax.random.fold_in(k_steps, i))
        if use_corrector:

            def corrector_step(j, c):
                z = jax.random.normal(jax.random.fold_in(k_corr, j), shape, dtype)
                return corrector(score, c[0], t, z, sde=sde, snr=snr)

            x, x_mean = jax.lax.fori_loop(0, n_steps, corrector_step, (x, x_mean))
        if use_predictor:
            z = jax.random.normal(k_pred, shape, dtype)
            x, x_mean = predictor(score, x, t, z, sde=sde, probability_flow=probability_flow)
        return x, x_mean

    x, x_mean = jax.lax.fori_loop(0, sde.N, step, (x, x))
    nfe = sde.N * (
        getattr(predictor, "nfe", 1) * use_predictor
        + n_steps * getattr(corrector, "nfe", 1) * use_corrector
    )
    return SampleResult(x_mean if denoise else x, jnp.asarray(nfe, jnp.int32))


def resolve_pc_steps(
    sde: SDE, predictor: Any, corrector: Any, n_steps: int, probability_flow: bool
) -> tuple[Callable, Callable]:
    """Check the options of a predictor-corrector loop and return ``(predictor, corrector)``
    functions (shared by :func:`pc_sample`, :func:`get_pc_sampler` and the controllable samplers)."""
    check_sde(sde)
    pred = lookup_step_fn(PREDICTORS, predictor, "predictor")
    corr = lookup_step_fn(CORRECTORS, corrector, "corrector")
    if pred is PREDICTORS["ancestral_sampling"] and probability_flow:
        raise ValueError(
            "ancestral_sampling has no probability-flow version; use predictor='reverse_diffusion' "
            "or 'euler_maruyama' with probability_flow=True."
        )
    if int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(
            f"n_steps (corrector steps per level) must be a non-negative integer, got {n_steps!r}."
        )
    return pred, corr


def pc_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    predictor: str | Callable = "reverse_diffusion",
    corrector: str | Callable = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float = 1e-3,
    x_init: jax.Array | None = None,
    dtype=None,
) -> SampleResult:
    """Predictor-corrector sampler (paper algorithm 1 / official ``pc_sampler``).

    Starting from ``x_init`` (or a prior draw), for each ``t_i`` in ``linspace(T, eps, sde.N)``:
    ``n_steps`` corrector steps, then one predictor step.  ``predictor`` / ``corrector`` are names
    of :data:`PREDICTORS` / :data:`CORRECTORS` (``"none"`` for predictor-only or corrector-only
    sampling; corrector ``"ald"`` with predictor ``"none"`` is NCSN's annealed Langevin dynamics) or
    functions with their signature. With ``denoise`` the noise-free mean of the last step is
    returned (official ``noise_removal``).

    Returns ``SampleResult(x, nfe)``, ``nfe = N (predictor + n_steps corrector evaluations)``.
    ``score_fn(x, t)`` may be a :class:`jax.tree_util.Partial` to pass parameters as data;
    compilation caching is explained in the module docstring.  ``dtype`` defaults to that of
    ``x_init`` or the default float.
    """
    pred, corr = resolve_pc_steps(sde, predictor, corrector, n_steps, probability_flow)
    shape, dtype = check_shape_dtype(shape, x_init, dtype)
    return _pc_sample(
        as_score_pytree(score_fn),
        rng,
        x_init,
        snr,
        eps,
        sde=sde,
        shape=shape,
        dtype=dtype,
        predictor=pred,
        corrector=corr,
        n_steps=int(n_steps),
        probability_flow=bool(probability_flow),
        denoise=bool(denoise),
    )


def get_pc_sampler(
    sde: SDE,
    shape: Sequence[int],
    param_score_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    *,
    predictor: str | Callable = "reverse_diffusion",
    corrector: str | Callable = "langevin",
    snr: float = 0.16,
    n_steps: int = 1,
    probability_flow: bool = False,
    denoise: bool = True,
    eps: float = 1e-3,
    dtype=None,
) -> Callable[..., SampleResult]:
    """A PC sampler ``sampler(params, rng, x_init=None) -> SampleResult`` with the parameters as
    data.

    ``param_score_fn(params, x, t) -> score``, e.g. for a flax model trained on ``sde``::

        def param_score_fn(params, x, t):
            return get_score_fn(sde, get_model_fn(model, params), continuous=True)(x, t)

        sampler = get_pc_sampler(sde, (64, 32, 32, 3), param_score_fn)
        x, nfe = sampler(state.params_ema, jax.random.fold_in(rng, step))

    The sampler compiles on its first call and never again for parameters and keys of the same
    shapes.
    """
    if not callable(param_score_fn):
        raise TypeError("param_score_fn must be a callable (params, x, t) -> score.")
    options = dict(
        predictor=predictor,
        corrector=corrector,
        snr=snr,
        n_steps=n_steps,
        probability_flow=probability_flow,
        denoise=denoise,
        eps=eps,
        dtype=dtype,
    )
    # Validate the options now rather than at the first call.
    resolve_pc_steps(sde, predictor, corrector, n_steps, probability_flow)

    def sampler(params: Any, rng: jax.Array, x_init: jax.Array | None = None) -> SampleResult:
        return pc_sample(Partial(param_score_fn, params), sde, shape, rng, x_init=x_init, **options)

    return sampler
