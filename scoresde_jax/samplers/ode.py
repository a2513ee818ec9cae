"""Probability-flow ODE sampler (Song et al., ICLR 2021, section 4.3) with diffrax, inside jit.

    dx/dt = f(x, t) - g(t)^2 score(x, t) / 2,     integrated from t = T (prior draw) down to t = eps

by :func:`scoresde_jax.flow.solve_probability_flow` (an adaptive Runge-Kutta solver with
``PIDController(rtol, atol)``; the official code uses scipy's RK45 with ``rtol = atol = 1e-5`` on
host).  The whole batch is ONE ODE state of shape ``(B, *D)`` -- as the official code, which
flattens the batch into one scipy vector -- rather than ``vmap`` over examples: the score network is
evaluated on the whole batch at every stage, and a vmapped adaptive solve would run every example
for the steps of the slowest one anyway.  The consequence is a shared step-size sequence, chosen
with diffrax's RMS error norm over the batch.  ``nfe`` is :func:`scoresde_jax.flow.solver_nfe`
(accepted + rejected steps and the solver's Butcher tableau).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.flow import (
    ODE_SOLVERS,
    probability_flow_drift,
    resolve_solver,
    solve_probability_flow,
    solver_nfe,
)
from scoresde_jax.samplers.common import (
    SampleResult,
    as_score_pytree,
    check_sde,
    check_shape_dtype,
    initial_state,
)
from scoresde_jax.samplers.predictors import reverse_diffusion
from scoresde_jax.sde import SDE

__all__ = ["ode_sample", "ODE_SOLVERS", "solver_nfe"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


@functools.partial(
    jax.jit, static_argnames=("sde", "shape", "dtype", "solver", "denoise", "max_steps")
)
def _ode_sample(
    score, rng, x_init, rtol, atol, eps, *, sde, shape, dtype, solver, denoise, max_steps
):
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


def ode_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    solver: str | Any = "tsit5",
    denoise: bool = True,
    x_init: jax.Array | None = None,
    max_steps: int = 4096,
    dtype=None,
) -> SampleResult:
    """Sample by solving the probability-flow ODE from ``T`` to ``eps`` (official ``ode_sampler``).

    ``x_init`` is the state at ``T`` (default: a prior draw with ``rng``).  ``solver`` is a name of
    :data:`ODE_SOLVERS` or a diffrax solver.  With ``denoise`` a final noise-free reverse-diffusion
    step at ``eps`` is taken (+1 evaluation).  Returns ``SampleResult(x, nfe)``.  Compilation
    caching as for :func:`scoresde_jax.samplers.pc_sample`.  Exceeding ``max_steps`` raises an error
    at run time.
    """
    check_sde(sde)
    shape, dtype = check_shape_dtype(shape, x_init, dtype)
    if not (rtol > 0 and atol >= 0):
        raise ValueError(f"ode_sample needs rtol > 0 and atol >= 0, got rtol={rtol}, atol={atol}.")
    return _ode_sample(
        as_score_pytree(score_fn),
        rng,
        x_init,
        rtol,
        atol,
        eps,
        sde=sde,
        shape=shape,
        dtype=dtype,
        solver=resolve_solver(solver),
        denoise=bool(denoise),
        max_steps=int(max_steps),
    )
