"""Adaptive-step samplers: the probability-flow ODE with diffrax and the reverse SDE of "Gotta Go
Fast".

* :func:`ode_sample` -- the probability-flow ODE (Song et al., ICLR 2021, section 4.3)

      dx/dt = f(x, t) - g(t)^2 score(x, t) / 2,     integrated from t = T (prior draw) down to eps

  by :func:`scoresde_jax.flow.solve_probability_flow` (an adaptive Runge-Kutta solver with
  ``PIDController(rtol, atol)``; the official code uses scipy's RK45 with ``rtol = atol = 1e-5`` on
  host).  The whole batch is ONE ODE state of shape ``(B, *D)`` -- as the official code, which
  flattens the batch into one scipy vector -- rather than ``vmap`` over examples: the score network
  is evaluated on the whole batch at every stage, and a vmapped adaptive solve would run every
  example for the steps of the slowest one anyway.  The consequence is a shared step-size sequence,
  chosen with diffrax's RMS error norm over the batch.  ``nfe`` is
  :func:`scoresde_jax.flow.solver_nfe` (accepted + rejected steps and the solver's Butcher
  tableau).  It takes tolerances, not a budget of evaluations.
* :func:`adaptive_sde_sample` -- Jolicoeur-Martineau et al. 2021, algorithm 1: the reverse SDE
  ``dx = [f - g^2 score] dt + g dw_bar`` with an Euler-Maruyama step and an improved-Euler step
  sharing one Brownian increment; their difference, scaled by ``max(atol, rtol max(|x'|,
  |x'_prev|))``, is the error estimate that accepts or rejects the step and sets the next one
  (``h <- min(t - eps, theta h E^{-r})``); a rejected step retries with the same normal draw.
  Each example has its own step size; ``nfe`` counts the batched evaluations (2 per iteration).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.flow import probability_flow_drift, resolve_solver, solve_probability_flow
from scoresde_jax.samplers.common import (SampleResult, Sampler, StepCallback, check_callback,
                                         check_eps, checked_inputs, initial_state, report_step)
from scoresde_jax.samplers.grid import data_prediction
from scoresde_jax.samplers.predictors import reverse_diffusion
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = ["ode_sample", "adaptive_sde_sample", "ODE", "ADAPTIVE_SDE"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------------
# Probability-flow ODE
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("sde", "shape", "dtype", "solver", "denoise",
                                             "max_steps"))
def _ode_sample(score, rng, x_init, rtol, atol, eps, *, sde, shape, dtype, solver, denoise,
                max_steps):
    x = initial_state(sde, shape, dtype, rng, x_init)
    t1 = jnp.asarray(eps, dtype)
    x, nfe = solve_probability_flow(
        lambda t, y: probability_flow_drift(sde, score, y, t),
        x,
        t0=jnp.asarray(sde.T, dtype),
        t1=t1,
        solver=solver,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    )
    if denoise:
        # One reverse-diffusion predictor step at t = eps without noise (official
        # ``denoise_update_fn``).
        _, x = reverse_diffusion(
            score, x, jnp.full((shape[0],), t1, dtype), jnp.zeros_like(x), sde=sde
        )
        nfe = nfe + 1
    return SampleResult(x, jnp.asarray(nfe, jnp.int32))


def ode_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array, *,
               rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-3,
               solver: str | Any = "tsit5", denoise: bool = True, x_init: jax.Array | None = None,
               max_steps: int = 4096, dtype=None,
               callback: StepCallback | None = None) -> SampleResult:
    """Sample by solving the probability-flow ODE from ``T`` to ``eps`` (official ``ode_sampler``).

    ``x_init`` is the state at ``T`` (default: a prior draw with ``rng``).  ``solver`` is a name of
    :data:`ODE_SOLVERS` or a diffrax solver.  With ``denoise`` a final noise-free reverse-diffusion
    step at ``eps`` is taken (+1 evaluation).  Returns ``SampleResult(x, nfe)``.  Compilation
    caching as for :func:`scoresde_jax.samplers.pc.pc_sample`.  Exceeding ``max_steps`` raises an
    error at run time.  The steps are chosen inside the diffrax solve: a per-step ``callback`` is
    refused (the fixed-grid methods and ``adaptive_sde`` take one).
    """
    if callback is not None:
        raise ValueError("ode_sample takes no per-step callback (its steps are chosen inside the "
                         "adaptive solve); use a fixed-grid method (e.g. 'unipc', 'heun') or "
                         "'adaptive_sde'.")
    score, shape, dtype = checked_inputs(score_fn, sde, shape, x_init, dtype)
    check_eps(eps, sde)
    if not (rtol > 0 and atol >= 0):
        raise ValueError(f"ode_sample needs rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}.")
    return _ode_sample(score, rng, x_init, rtol, atol, eps, sde=sde, shape=shape, dtype=dtype,
                       solver=resolve_solver(solver), denoise=bool(denoise),
                       max_steps=int(max_steps))


# --------------------------------------------------------------------------------------------------
# Gotta Go Fast: adaptive steps for the reverse SDE
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("sde", "shape", "dtype", "max_iters", "denoise",
                                             "budgeted", "callback"))
def _adaptive(score, rng, x_init, eps, rtol, atol, h_init, safety, exponent, *, sde, shape,
              dtype, max_iters, denoise, budgeted, callback=None):
    k_init, k_steps = jax.random.split(rng)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    b = shape[0]
    eps = jnp.asarray(eps, dtype)
    rsde = sde.reverse(score)

    def cond(c):
        t, it = c[2], c[4]
        return jnp.any(t > eps) & (it < max_iters)

    def body(c):
        x, x_prev, t, h, it, z = c
        if callback is not None:  # one more evaluation per iteration, only for the callback
            report_step(callback, it, t, x, data_prediction(score, sde, x, t))
        active = t > eps
        forced = jnp.zeros_like(active)
        if budgeted:  # finish within max_iters: cover what is left in the iterations remaining
            h_min = (t - eps) / jnp.maximum(max_iters - it, 1).astype(dtype)
            forced = h_min >= h  # a step lengthened to fit the budget is accepted
            h = jnp.maximum(h, h_min)
        h = jnp.where(active, jnp.minimum(h, t - eps), 0.0)
        dw = batch_mul(jnp.sqrt(h), z)
        f1, g1 = rsde.sde(x, t)  # reverse drift f - g^2 score, for a negative dt
        x_em = x - batch_mul(h, f1) + batch_mul(g1, dw)
        f2, g2 = rsde.sde(x_em, t - h)
        x_ie = 0.5 * (x_em + x - batch_mul(h, f2) + batch_mul(g2, dw))  # improved Euler
        scale = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_em), jnp.abs(x_prev)))
        err = jnp.sqrt(jnp.mean(((x_em - x_ie) / scale).reshape(b, -1) ** 2, axis=1))
        accept = active & ((err <= 1.0) | forced)
        acc = accept.reshape((b,) + (1,) * (len(shape) - 1))
        x, x_prev = jnp.where(acc, x_ie, x), jnp.where(acc, x_em, x_prev)
        t = jnp.where(accept, jnp.where(h >= t - eps, eps, t - h), t)  # land on eps exactly
        h = jnp.where(active, safety * h * jnp.power(jnp.maximum(err, 1e-10), -exponent), h)
        # a rejected step retries with the same draw z (rescaled to the new h): redrawing would
        # bias the accepted increments towards small |z|
        z = jnp.where(acc, jax.random.normal(jax.random.fold_in(k_steps, it + 1), shape, dtype), z)
        return x, x_prev, t, h, it + 1, z

    t0 = jnp.full((b,), sde.T, dtype)
    h0 = jnp.full((b,), h_init, dtype)
    z0 = jax.random.normal(jax.random.fold_in(k_steps, 0), shape, dtype)
    x, _, t, _, iters, _ = jax.lax.while_loop(cond, body, (x, x, t0, h0, jnp.int32(0), z0))
    if denoise:
        x = data_prediction(score, sde, x, jnp.full((b,), eps, dtype))
    return SampleResult(x, (2 * iters + int(denoise)).astype(jnp.int32))


def adaptive_sde_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array,
                        *, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.01,
                        safety: float = 0.9, exponent: float = 0.9, max_nfe: int | None = None,
                        max_iters: int = 10_000, eps: float = 1e-3, denoise: bool = True,
                        x_init: jax.Array | None = None, dtype=None,
                        callback: StepCallback | None = None) -> SampleResult:
    """Adaptive reverse-SDE solver (Jolicoeur-Martineau et al. 2021, "Gotta Go Fast", algorithm 1).

    From ``t`` to ``t - h`` with one Brownian increment ``dW ~ N(0, h I)`` and the reverse drift
    ``F = f - g^2 score``:

        x'  = x - h F(x, t) + g(t) dW                                   (Euler-Maruyama)
        x'' = (x' + x - h F(x', t - h) + g(t - h) dW) / 2               (improved Euler)
        E   = || (x' - x'') / max(atol, rtol max(|x'|, |x'_prev|)) ||_2 / sqrt(D)

    accepted (``x <- x''``) when ``E <= 1``; then ``h <- min(t - eps, safety h E^{-exponent})``.
    ``atol`` is in data units (the paper's 0.0078 is for data in ``[-1, 1]``).  Each example has
    its own ``t`` and ``h``; ``nfe = 2 iterations + denoise`` (every iteration evaluates the whole
    batch twice).  ``max_nfe`` is a hard budget: the steps are lengthened so that the solve ends
    within ``(max_nfe - denoise) // 2`` iterations (the last ones accepted whatever their error);
    otherwise the loop stops after ``max_iters``.  ``callback``
    (:mod:`~scoresde_jax.samplers.common`) is called at each iteration ``i``, accepted or not, with
    each example's time ``t`` (shape ``(B,)``), the state and its data prediction (one evaluation
    more per iteration, not counted in ``nfe``).
    """
    check_callback(callback)
    score, shape, dtype = checked_inputs(score_fn, sde, shape, x_init, dtype)
    check_eps(eps, sde)
    if not (rtol > 0 and atol > 0 and h_init > 0 and 0 < safety <= 1 and exponent > 0):
        raise ValueError(f"adaptive_sde_sample needs rtol, atol, h_init, exponent > 0 and safety in "
                         f"(0, 1], got rtol={rtol}, atol={atol}, h_init={h_init}, safety={safety}, "
                         f"exponent={exponent}.")
    budgeted = max_nfe is not None
    if budgeted:
        iters = (int(max_nfe) - int(bool(denoise))) // 2
        if iters < 1:
            raise ValueError(f"max_nfe={max_nfe} leaves no step (2 evaluations each, +1 to denoise).")
    else:
        iters = int(max_iters)
    extra = {} if callback is None else {"callback": callback}
    return _adaptive(score, rng, x_init, eps, rtol, atol, h_init, safety,
                     exponent, sde=sde, shape=shape, dtype=dtype, max_iters=iters,
                     denoise=bool(denoise), budgeted=budgeted, **extra)


def _no_budget(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    raise ValueError("method 'ode' is adaptive (it takes rtol/atol, not an nfe budget); use a "
                     "fixed-step method (e.g. 'dpm_solver_pp_3m', 'unipc') or 'adaptive_sde' with "
                     "nfe, or drop nfe.")


def _max_nfe(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    return {"max_nfe": nfe}, sde  # the error control works inside the budget


ODE = Sampler(ode_sample, _no_budget, {"rtol": "rtol", "atol": "atol", "solver": "ode_solver"})
ADAPTIVE_SDE = Sampler(adaptive_sde_sample, _max_nfe,
                       {"rtol": "rtol", "atol": "atol", "h_init": "h_init", "safety": "safety",
                        "exponent": "exponent", "max_nfe": "max_nfe"})
