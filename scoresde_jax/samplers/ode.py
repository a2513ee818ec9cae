"""Probability-flow ODE sampler (Song et al., ICLR 2021, section 4.3) with diffrax, inside jit.

    dx/dt = f(x, t) - g(t)^2 score(x, t) / 2,     integrated from t = T (prior draw) down to t = eps

with an adaptive Runge-Kutta solver (``PIDController(rtol, atol)``; the official code uses scipy's
RK45 with ``rtol = atol = 1e-5`` on host).  The whole batch is ONE ODE state of shape ``(B, *D)`` --
as the official code, which flattens the batch into one scipy vector -- rather than ``vmap`` over
examples: the score network is evaluated on the whole batch at every stage, and a vmapped adaptive
solve would run every example for the steps of the slowest one anyway.  The consequence is a shared
step-size sequence, chosen with diffrax's RMS error norm over the batch.  ``nfe`` is computed from
the diffrax step counts (accepted + rejected steps) and the solver's Butcher tableau
(first-same-as-last solvers reuse one evaluation per step).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import diffrax
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.sde import SDE
from scoresde_jax.samplers.pc import (
    SampleResult,
    as_score_pytree,
    check_sde,
    check_shape_dtype,
    initial_state,
)
from scoresde_jax.samplers.predictors import reverse_diffusion

__all__ = ["ode_sample", "ODE_SOLVERS", "solver_nfe"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

ODE_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "rk45": diffrax.Dopri5,  # scipy's RK45 is Dormand-Prince 5(4)
    "dopri8": diffrax.Dopri8,
    "dop853": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "rk23": diffrax.Bosh3,  # scipy's RK23 is Bogacki-Shampine 3(2)
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
}
"""Adaptive explicit diffrax solvers by name (scipy names RK45 / RK23 / DOP853 map to their diffrax
equivalents)."""


def solver_nfe(solver: diffrax.AbstractSolver, num_steps: jax.Array) -> jax.Array:
    """Vector-field evaluations of an explicit Runge-Kutta ``solver`` over ``num_steps`` (accepted +
    rejected) steps: ``num_steps * stages`` or, first-same-as-last, ``1 + num_steps * (stages -
    1)``.

    (No evaluations are spent on the initial step size: ``ode_sample`` passes ``dt0``.)
    """
    tableau = getattr(solver, "tableau", None)
    if tableau is None:
        raise ValueError(
            f"Cannot count evaluations of solver {type(solver).__name__}; use one of "
            f"{sorted(ODE_SOLVERS)}."
        )
    stages = int(tableau.num_stages)
    if tableau.fsal:
        return 1 + num_steps * (stages - 1)
    return num_steps * stages


def _resolve_solver(solver: Any) -> diffrax.AbstractSolver:
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    name = str(solver).lower()
    if name not in ODE_SOLVERS:
        raise ValueError(
            f"Unknown ODE solver {solver!r}; use one of {sorted(ODE_SOLVERS)} or a diffrax solver "
            "instance."
        )
    return ODE_SOLVERS[name]()


@functools.partial(
    jax.jit, static_argnames=("sde", "shape", "dtype", "solver", "denoise", "max_steps")
)
def _ode_sample(
    score, rng, x_init, rtol, atol, eps, *, sde, shape, dtype, solver, denoise, max_steps
):
    x = initial_state(sde, shape, dtype, rng, x_init)
    rsde = sde.reverse(score, probability_flow=True)

    def vector_field(t, y, args):
        del args
        return rsde.sde(y, jnp.full((shape[0],), t, dtype))[0]

    t0 = jnp.asarray(sde.T, dtype)
    t1 = jnp.asarray(eps, dtype)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        t0=t0,
        t1=t1,
        dt0=(t1 - t0) / 100,
        y0=x,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    x = sol.ys[-1]
    nfe = solver_nfe(solver, sol.stats["num_steps"])
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
        solver=_resolve_solver(solver),
        denoise=bool(denoise),
        max_steps=int(max_steps),
    )
