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
i)``.  An optional ``projection`` (a pytree function, e.g. the replacement of the known part in
:mod:`scoresde_jax.controllable`) is applied after every corrector and predictor step and to the
initial state; its keys are derived apart from the predictor / corrector noise, so without it the
draws are those of the plain loop.

Data parallelism: call it inside a ``jax.jit`` with the batch of ``x_init`` sharded over a mesh (or
let the output be sharded); the batch-mean norms of the Langevin corrector then are global means
automatically.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.samplers.common import (
    SampleResult,
    Sampler,
    StepCallback,
    check_callback,
    check_eps,
    as_score_pytree,
    check_sde,
    checked_inputs,
    initial_state,
    lookup_step_fn,
    report_step,
)
from scoresde_jax.samplers.correctors import CORRECTORS
from scoresde_jax.samplers.grid import data_prediction
from scoresde_jax.samplers.predictors import PREDICTORS
from scoresde_jax.sde import SDE

__all__ = [
    "SampleResult",
    "pc_sample",
    "get_pc_sampler",
    "as_score_pytree",
    "resolve_pc_steps",
    "check_pc_options",
    "pc_levels",
    "PC",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
Projection = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

_PROJECTION_KEY = 1  # projection keys: fold_in(rng, _PROJECTION_KEY), apart from the step noise


@functools.partial(jax.jit, static_argnames=("sde", "shape", "dtype", "predictor", "corrector",
                                             "n_steps", "probability_flow", "denoise",
                                             "callback"))
def _pc_sample(score, rng, x_init, snr, eps, projection, *, sde, shape, dtype, predictor, corrector,
               n_steps, probability_flow, denoise, callback=None):
    k_init, k_steps = jax.random.split(rng)
    k_project = jax.random.fold_in(rng, _PROJECTION_KEY)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    out = jax.eval_shape(score, x, jnp.zeros((shape[0],), dtype))  # trace time only
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"score_fn(x, t) returned shape {tuple(out.shape)} for x of shape "
                         f"{tuple(shape)}; it must return the score with x's shape.")
    timesteps = jnp.linspace(jnp.asarray(sde.T, dtype), jnp.asarray(eps, dtype), sde.N)
    snr = jnp.asarray(snr, dtype)
    use_corrector = getattr(corrector, "nfe", 1) > 0 and n_steps > 0
    use_predictor = getattr(predictor, "nfe", 1) > 0

    def project(x, x_mean, t, key):
        return (x, x_mean) if projection is None else projection(x, x_mean, t, key)

    # level i, sub-step j (correctors j < n_steps, predictor j = n_steps); the start is level N
    t_start = jnp.full((shape[0],), timesteps[0], dtype)
    x, _ = project(x, x, t_start, jax.random.fold_in(k_project, sde.N))

    def step(i, carry):
        x, x_mean = carry
        t = jnp.full((shape[0],), timesteps[i], dtype)
        k_corr, k_pred = jax.random.split(jax.random.fold_in(k_steps, i))
        k_proj = jax.random.fold_in(k_project, i)
        if callback is not None:  # one more evaluation per level, only for the callback
            report_step(callback, i, timesteps[i], x, data_prediction(score, sde, x, t))
        if use_corrector:

            def corrector_step(j, c):
                z = jax.random.normal(jax.random.fold_in(k_corr, j), shape, dtype)
                x_, xm_ = corrector(score, c[0], t, z, sde=sde, snr=snr)
                return project(x_, xm_, t, jax.random.fold_in(k_proj, j))

            x, x_mean = jax.lax.fori_loop(0, n_steps, corrector_step, (x, x_mean))
        if use_predictor:
            z = jax.random.normal(k_pred, shape, dtype)
            x, x_mean = predictor(score, x, t, z, sde=sde, probability_flow=probability_flow)
            x, x_mean = project(x, x_mean, t, jax.random.fold_in(k_proj, n_steps))
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
    functions."""
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


def _check_numbers(sde: SDE, shape: tuple, snr: Any, eps: Any) -> None:
    """snr >= 0 and finite, 0 < eps < T (when concrete), shape (B, *D) with D non-empty."""
    if len(shape) < 2:
        raise ValueError(f"shape must be (B, *D) with at least one data axis, got {shape}; "
                         "e.g. (64, 2) for 2-D points, (64, 32, 32, 3) for images.")
    if not isinstance(snr, jax.core.Tracer):
        v = float(snr)
        if not (v >= 0 and v < float("inf")):
            raise ValueError(f"snr={snr!r} must be finite and >= 0 (e.g. 0.16).")
    check_eps(eps, sde)


def pc_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array, *,
              predictor: str | Callable = "reverse_diffusion",
              corrector: str | Callable = "langevin", snr: float = 0.16, n_steps: int = 1,
              probability_flow: bool = False, denoise: bool = True, eps: float = 1e-3,
              x_init: jax.Array | None = None, dtype=None,
              projection: Projection | Partial | None = None,
              callback: StepCallback | None = None) -> SampleResult:
    """Predictor-corrector sampler (paper algorithm 1 / official ``pc_sampler``).

    Starting from ``x_init`` (or a prior draw), for each ``t_i`` in ``linspace(T, eps, sde.N)``:
    ``n_steps`` corrector steps, then one predictor step.  ``predictor`` / ``corrector`` are names
    of :data:`PREDICTORS` / :data:`CORRECTORS` (``"none"`` for predictor-only or corrector-only
    sampling; corrector ``"ald"`` with predictor ``"none"`` is NCSN's annealed Langevin dynamics) or
    functions with their signature. With ``denoise`` the noise-free mean of the last step is
    returned (official ``noise_removal``).  These keyword options, with their defaults here, are
    "the PC options" that :func:`get_pc_sampler` and :mod:`scoresde_jax.controllable` forward.

    ``projection(x, x_mean, t, key) -> (x, x_mean)``, if given, is applied to the initial state at
    ``t = T`` and after every corrector and every predictor step (e.g. inpainting's replacement of
    the known part).  Pass it as a :class:`jax.tree_util.Partial` so that its data are traced
    arguments: the loop compiles once per projection function.

    ``callback`` (:mod:`~scoresde_jax.samplers.common`) is called at each level ``i`` with ``t_i``,
    the state before its corrector steps and that state's data prediction ``x0_hat(x, t_i)`` (one
    evaluation more per level, not counted in ``nfe``).

    Returns ``SampleResult(x, nfe)``, ``nfe = N (predictor + n_steps corrector evaluations)``.
    ``score_fn(x, t)`` may be a :class:`jax.tree_util.Partial` to pass parameters as data;
    compilation caching is explained in the module docstring.  ``dtype`` defaults to that of
    ``x_init`` or the default float.
    """
    pred, corr = resolve_pc_steps(sde, predictor, corrector, n_steps, probability_flow)
    score, shape, dtype = checked_inputs(score_fn, sde, shape, x_init, dtype)
    _check_numbers(sde, shape, snr, eps)
    check_callback(callback)
    extra = {} if callback is None else {"callback": callback}
    if projection is not None:
        projection = as_score_pytree(projection, "projection", "(x, x_mean, t, key) -> (x, x_mean)")
    return _pc_sample(score, rng, x_init, snr, eps, projection, sde=sde, shape=shape, dtype=dtype,
                      predictor=pred, corrector=corr, n_steps=int(n_steps),
                      probability_flow=bool(probability_flow), denoise=bool(denoise), **extra)


def check_pc_options(sde: SDE, **pc_options: Any) -> None:
    """Raise now, not at the first sample, for bad keyword options of :func:`pc_sample` (unknown
    names, predictor / corrector names, ``n_steps``); the defaults are :func:`pc_sample`'s."""
    bound = inspect.signature(pc_sample).bind(None, sde, (), None, **pc_options)
    bound.apply_defaults()
    opts = bound.arguments
    resolve_pc_steps(sde, opts["predictor"], opts["corrector"], opts["n_steps"],
                     opts["probability_flow"])


def get_pc_sampler(
    sde: SDE,
    shape: Sequence[int],
    param_score_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    **pc_options: Any,
) -> Callable[..., SampleResult]:
    """A PC sampler ``sampler(params, rng, x_init=None) -> SampleResult`` with the parameters as
    data; ``pc_options`` are the keyword options of :func:`pc_sample`.

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
    if "x_init" in pc_options:
        raise TypeError("get_pc_sampler: pass x_init to the sampler, sampler(params, rng, x_init).")
    check_pc_options(sde, **pc_options)

    def sampler(params: Any, rng: jax.Array, x_init: jax.Array | None = None) -> SampleResult:
        return pc_sample(
            Partial(param_score_fn, params), sde, shape, rng, x_init=x_init, **pc_options
        )

    return sampler


def pc_levels(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    """Plan of :func:`pc_sample`: ``N = nfe // (predictor + n_steps corrector evaluations)`` levels
    (``sde.N`` replaced); denoising is free (it returns the last step's mean)."""
    pred = lookup_step_fn(PREDICTORS, options.get("predictor", "reverse_diffusion"), "predictor")
    corr = lookup_step_fn(CORRECTORS, options.get("corrector", "langevin"), "corrector")
    per_level = getattr(pred, "nfe", 1) + int(options.get("n_steps", 1)) * getattr(corr, "nfe", 1)
    levels = nfe // max(per_level, 1)
    if levels < 1:
        raise ValueError(f"nfe={nfe} is below one PC level ({per_level} evaluations).")
    return {}, dataclasses.replace(sde, N=levels)


PC = Sampler(pc_sample, pc_levels,
             {"predictor": "predictor", "corrector": "corrector", "snr": "snr",
              "n_steps": "n_steps_each", "probability_flow": "probability_flow"})
