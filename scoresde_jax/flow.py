"""The one integration of the probability-flow ODE (Song et al., ICLR 2021, section 4.3, eq. 13):

    dx/dt = f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2,

used backwards from ``T`` to ``eps`` by the ODE sampler (:func:`scoresde_jax.samplers.ode_sample`)
and forwards from ``eps`` to ``T``, augmented with the divergence integral ``d delta / dt = div
f~``, by the likelihood (:mod:`scoresde_jax.likelihood`).  Both go through
:func:`solve_probability_flow`: diffrax with an adaptive explicit Runge-Kutta solver
(``PIDController(rtol, atol)``), a first step of ``(t1 - t0) / 100``, and one count of vector-field
evaluations, :func:`solver_nfe`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from scoresde_jax.sde import SDE

__all__ = [
    "ODE_SOLVERS",
    "FlowSolution",
    "probability_flow_drift",
    "resolve_solver",
    "solve_probability_flow",
    "solver_nfe",
]

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


class FlowSolution(NamedTuple):
    """The state ``y(t1)`` (same pytree as ``y0``) and the number of vector-field evaluations."""

    y: Any
    nfe: jax.Array


def solver_nfe(solver: diffrax.AbstractSolver, num_steps: jax.Array) -> jax.Array:
    """Vector-field evaluations of an explicit Runge-Kutta ``solver`` over ``num_steps`` (accepted +
    rejected) steps: ``num_steps * stages`` or, first-same-as-last, ``1 + num_steps * (stages -
    1)``.

    (No evaluations are spent on the initial step size: :func:`solve_probability_flow` passes
    ``dt0``.)
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


def resolve_solver(solver: Any) -> diffrax.AbstractSolver:
    """A diffrax solver instance from a name of :data:`ODE_SOLVERS` (or the instance itself)."""
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    name = str(solver).lower()
    if name not in ODE_SOLVERS:
        raise ValueError(
            f"Unknown ODE solver {solver!r}; use one of {sorted(ODE_SOLVERS)} or a diffrax solver "
            "instance."
        )
    return ODE_SOLVERS[name]()


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> jax.Array:
    """``f~(x, t) = f(x, t) - g(t)^2 score(x, t) / 2`` at a scalar time ``t`` (the drift of
    ``sde.reverse(score_fn, probability_flow=True)``)."""
    rsde = sde.reverse(score_fn, probability_flow=True)
    return rsde.sde(x, jnp.full((x.shape[0],), t, x.dtype))[0]


def solve_probability_flow(
    vector_field: Callable[[jax.Array, Any], Any],
    y0: Any,
    *,
    t0: jax.Array,
    t1: jax.Array,
    solver: diffrax.AbstractSolver,
    rtol: float,
    atol: float,
    max_steps: int,
) -> FlowSolution:
    """Integrate ``dy/dt = vector_field(t, y)`` from ``t0`` to ``t1`` (either direction) and return
    ``FlowSolution(y(t1), nfe)``.

    ``y`` is ``x`` with ``vector_field = probability_flow_drift`` (sampling), or an augmented pytree
    such as ``(x, delta)`` with ``d delta / dt = div f~`` (likelihood).  The first step is ``(t1 -
    t0) / 100``; ``nfe`` is :func:`solver_nfe` of the attempted steps.  Exceeding ``max_steps``
    raises an error at run time.
    """
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vector_field(t, y)),
        solver,
        t0=t0,
        t1=t1,
        dt0=(t1 - t0) / 100,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    y1 = jax.tree_util.tree_map(lambda v: v[-1], sol.ys)
    return FlowSolution(y1, solver_nfe(solver, sol.stats["num_steps"]))
