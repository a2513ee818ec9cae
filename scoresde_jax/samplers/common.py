"""What every sampler of :mod:`scoresde_jax.samplers` shares: its registry record
(:class:`Sampler`), the typed result, the score function as a jit-able pytree, shape / dtype
checks, the initial state ``x(T)``, the per-step callback, and the ``nfe`` mark and lookup by name
of predictors and correctors.

The per-step callback (k-diffusion's convention): a sampler given ``callback`` calls it on the host
at each step with a dict ``{"i": step index, "t": time, "x": state at t, "denoised": x0 prediction
at (x, t)}`` (numpy values; ``t`` a scalar, or one time per example for ``adaptive_sde``), through
an ordered ``jax.debug.callback`` inside the jitted loop.  It is a static argument of the jitted
kernels: with ``callback=None`` (the default) the compiled program has no host callback at all.
"""

from __future__ import annotations

import functools
import types
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scoresde_jax.sde import SDE

__all__ = [
    "Sampler",
    "Plan",
    "SampleResult",
    "as_score_pytree",
    "check_sde",
    "check_shape_dtype",
    "checked_inputs",
    "initial_state",
    "StepCallback",
    "check_callback",
    "report_step",
    "lookup_step_fn",
    "step_fn",
]


class SampleResult(NamedTuple):
    """Samples ``x`` of shape ``(B, *D)`` and the number of score(-network) evaluations ``nfe``."""

    x: jax.Array
    nfe: jax.Array


Plan = Callable[[int, int, dict, SDE], tuple[dict, SDE]]
"""``plan(nfe, d, options, sde) -> (step options, sde)``: the step options (``num_steps``,
``max_nfe``, ...) under which a sampler spends at most ``nfe`` score evaluations, denoising
included (``d = 1`` with denoising, else 0), given its other ``options``; the SDE comes back
with ``N`` replaced where the sampler takes its step count from it (PC).  A plan raises
``ValueError`` for a sampler that takes no budget."""


class Sampler(NamedTuple):
    """One sampler as :data:`scoresde_jax.samplers.SAMPLERS` registers it.

    ``fn(score_fn, sde, shape, rng, *, x_init=None, denoise=True, **options) -> SampleResult``
    draws the samples; ``plan`` (:data:`Plan`) turns a budget ``nfe`` into its step options
    (:func:`scoresde_jax.samplers.sample` with ``nfe``); ``config_keys`` maps each argument of
    ``fn`` that a config may set to its ``config.sampling`` key (the config boundary passes only
    the keys a config sets; the defaults are those of ``fn``'s signature).
    """

    fn: Callable[..., SampleResult]
    plan: Plan
    config_keys: Mapping[str, str] = types.MappingProxyType({})


def as_score_pytree(
    score_fn: Any, name: str = "score_fn", signature: str = "(x, t) -> score"
) -> Partial:
    """``score_fn`` (or another function ``name`` with ``signature``, for the errors) as a pytree
    that ``jax.jit`` can take as an argument: a :class:`jax.tree_util.Partial` is kept (its data are
    traced, its function is the cache key), a plain callable is wrapped as ``Partial(fn)`` (see
    :mod:`scoresde_jax.samplers.pc` for the consequences for compilation)."""
    if isinstance(score_fn, Partial):
        return score_fn
    if callable(score_fn):
        return Partial(score_fn)
    raise TypeError(
        f"{name} must be a callable {name}{signature} or a jax.tree_util.Partial, got "
        f"{type(score_fn).__name__}."
    )


def check_sde(sde: Any) -> None:
    if not isinstance(sde, SDE):
        raise TypeError(
            f"sde must be a scoresde_jax.sde SDE (VESDE, VPSDE, subVPSDE), got "
            f"{type(sde).__name__}; build one with scoresde_jax.config.get_sde(config)."
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


def checked_inputs(score_fn: Any, sde: Any, shape: Sequence[int], x_init: jax.Array | None,
                   dtype) -> tuple[Partial, tuple[int, ...], Any]:
    """The checks every sampler makes of its common arguments: ``sde`` an :class:`SDE`, ``shape``
    against ``x_init`` and the dtype (:func:`check_shape_dtype`); returns ``(score, shape, dtype)``
    with the score function as a pytree (:func:`as_score_pytree`)."""
    check_sde(sde)
    shape, dtype = check_shape_dtype(shape, x_init, dtype)
    return as_score_pytree(score_fn), shape, dtype


def check_eps(eps: Any, sde: SDE) -> None:
    """The smallest time ``eps`` of a sampler must satisfy ``0 < eps < T`` (when concrete): the
    score is singular at ``t = 0`` and ``eps >= T`` leaves nothing to integrate."""
    if isinstance(eps, jax.core.Tracer):
        return
    v = float(eps)
    if not (0.0 < v < float(sde.T)):
        raise ValueError(f"eps={eps!r} must satisfy 0 < eps < T={sde.T} (e.g. 1e-3 for VP / "
                         "sub-VP, 1e-5 for VE).")


def initial_state(sde: SDE, shape, dtype, key, x_init):
    """``x_init`` (cast to ``dtype``) or a draw from the prior ``p_T``."""
    if x_init is not None:
        return jnp.asarray(x_init, dtype)
    return sde.prior_sampling(key, shape, dtype=dtype)


StepCallback = Callable[[dict], Any]
"""``callback({"i": int, "t": ndarray, "x": ndarray, "denoised": ndarray}) -> None``, see the module
docstring; its return value is ignored."""


def check_callback(callback: Any) -> None:
    """``callback`` must be ``None`` or a callable (it becomes a static argument of a jitted
    kernel, so it must also be hashable, as functions are)."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be None or a callable callback(info: dict), got "
                        f"{type(callback).__name__}.")


def _to_host(callback: StepCallback, i, t, x, denoised) -> None:
    callback({"i": int(i), "t": np.asarray(t), "x": np.asarray(x),
              "denoised": np.asarray(denoised)})


def report_step(callback: StepCallback | None, i, t, x, denoised) -> None:
    """Inside a jitted sampler: call ``callback`` on the host with step ``i``, time ``t``, state
    ``x`` and its data prediction ``denoised`` (an ordered :func:`jax.debug.callback`, so the calls
    come in step order); with ``callback=None`` nothing is traced."""
    if callback is None:
        return
    jax.debug.callback(functools.partial(_to_host, callback), jnp.asarray(i), t, x, denoised,
                       ordered=True)


def step_fn(nfe: int) -> Callable[[Callable], Callable]:
    """Decorator of a predictor or corrector: sets its ``nfe`` attribute, the number of score
    evaluations of one call, which the PC loop and its budget plan read (a function without it
    counts as one)."""

    def mark(fn: Callable) -> Callable:
        fn.nfe = nfe
        return fn

    return mark


def lookup_step_fn(table: dict, name: Any, kind: str) -> Callable:
    """A predictor or corrector by name from ``table`` (or ``name`` itself if it is a function)."""
    if callable(name):
        return name
    key = "none" if name is None else str(name).lower()
    if key not in table:
        raise ValueError(
            f"Unknown {kind} {name!r}; use one of {sorted(table)} or pass a function "
            f"{kind}(score_fn, x, t, z, *, sde, ...) -> (x, x_mean)."
        )
    return table[key]
