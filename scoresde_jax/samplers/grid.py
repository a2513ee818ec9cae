"""What the fixed-grid solvers share: the time grids, ``sigma_bar`` and the data prediction, the
checks of their common options, and their plans for a budget of score evaluations.

Every linear SDE has the perturbation kernel ``N(a(t) x_0, s(t)^2 I)``; the fixed-grid solvers
(:mod:`~scoresde_jax.samplers.exponential`, :mod:`~scoresde_jax.samplers.unipc`,
:mod:`~scoresde_jax.samplers.karras`) work in the variables that VE, VP and sub-VP share (Karras et
al. 2022, eq. 4; Lu et al. 2022):

    x0_hat(x, t) = (x + s(t)^2 score(x, t)) / a(t)      (Tweedie: the data prediction E[x_0 | x_t])
    sigma_bar(t) = s(t) / a(t),   lambda(t) = -log sigma_bar(t)   (half log-SNR)

in which the probability-flow ODE reads ``d(x/a) / d sigma_bar = (x/a - x0_hat) / sigma_bar``: only
the marginals ``p_t`` enter, which are fixed by ``(a, s)``.

Conventions of the fixed-grid solvers: ``num_steps`` grid times ``t_0 = T > ... > t_{n-1} = eps``
(:data:`TIME_GRIDS`), ``n - 1`` solver steps between them, and with ``denoise`` (default) a last
step to ``t = 0``: the data prediction ``x0_hat(x, eps)`` (Tweedie denoising, the official noise
removal; for Heun it is EDM's final Euler step to ``sigma = 0``).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from scoresde_jax.samplers.common import (SampleResult, StepCallback, check_callback, check_eps,
                                         checked_inputs)
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "TIME_GRIDS",
    "STATIC",
    "default_grid",
    "sigma_bar",
    "t_of_sigma_bar",
    "time_grid",
    "data_prediction",
    "batch_time",
    "denoised_result",
    "run_solver",
    "one_eval_per_step",
    "two_evals_per_step",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

TIME_GRIDS = ("uniform", "quadratic", "logsnr", "edm")
"""``uniform``: uniform in ``t``; ``quadratic``: uniform in ``sqrt(t)`` (DPM-Solver's
"time_quadratic"); ``logsnr``: uniform in ``lambda = -log sigma_bar``; ``edm``: ``sigma_bar_i =
(sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` with ``rho = 7``
(Karras et al. 2022).  ``grid=None`` (the ODE solvers' default) is :func:`default_grid`."""


STATIC = ("sde", "shape", "dtype", "num_steps", "grid", "denoise", "callback")
"""The static arguments that :func:`run_solver` passes to every fixed-grid solver's jitted kernel
(a kernel adds its own, e.g. ``STATIC + ("lower_order_final",)``); ``callback`` only when one is
given (kernels default it to ``None``)."""


def default_grid(sde: SDE) -> str:
    """The default grid of the ODE solvers, the SDE's ``default_time_grid``: ``"logsnr"`` for VE
    (where it is uniform in ``t``), ``"quadratic"`` otherwise (VP, sub-VP, custom SDEs)."""
    return sde.default_time_grid


def sigma_bar(sde: SDE, t: jax.Array) -> jax.Array:
    """``sigma_bar(t) = s(t) / a(t)``, increasing in ``t``."""
    return sde.marginal_std(t) / sde.mean_coeff(t)


def t_of_sigma_bar(
    sde: SDE, target: jax.Array, lo: jax.Array, hi: jax.Array, iters: int = 64
) -> jax.Array:
    """Invert the increasing map ``t -> sigma_bar(t)`` on ``[lo, hi]`` by bisection (any SDE, any
    dtype)."""

    def body(_, bounds):
        a, b = bounds
        mid = 0.5 * (a + b)
        below = sigma_bar(sde, mid) < target
        return jnp.where(below, mid, a), jnp.where(below, b, mid)

    a, b = jax.lax.fori_loop(
        0, iters, body, (jnp.full_like(target, lo), jnp.full_like(target, hi))
    )
    return 0.5 * (a + b)


def time_grid(
    sde: SDE, num_steps: int, eps, kind: str = "uniform", rho: float = 7.0, dtype=None
) -> jax.Array:
    """``num_steps`` decreasing times from ``T`` to ``eps`` (ends exact) spaced per ``kind`` in
    :data:`TIME_GRIDS`."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    T = jnp.asarray(sde.T, dtype)
    eps = jnp.asarray(eps, dtype)
    u = jnp.linspace(0.0, 1.0, num_steps, dtype=dtype)
    if kind == "uniform":
        return (T + u * (eps - T)).at[-1].set(eps)
    if kind == "quadratic":
        return ((jnp.sqrt(T) + u * (jnp.sqrt(eps) - jnp.sqrt(T))) ** 2).at[0].set(T).at[-1].set(eps)
    sb_max, sb_min = sigma_bar(sde, T[None])[0], sigma_bar(sde, eps[None])[0]
    if kind == "logsnr":
        sb = jnp.exp(jnp.log(sb_max) + u * (jnp.log(sb_min) - jnp.log(sb_max)))
    elif kind == "edm":
        sb = (sb_max ** (1 / rho) + u * (sb_min ** (1 / rho) - sb_max ** (1 / rho))) ** rho
    else:
        raise ValueError(f"Unknown time grid {kind!r}; use one of {TIME_GRIDS}.")
    ts = t_of_sigma_bar(sde, sb, eps, T)
    return ts.at[0].set(T).at[-1].set(eps)


def data_prediction(score_fn: ScoreFn, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    """Tweedie's ``x0_hat = E[x_0 | x_t] = (x + s(t)^2 score(x, t)) / a(t)``; ``t`` of shape
    ``(B,)``."""
    t = jnp.asarray(t, x.dtype)
    a, s = sde.mean_coeff(t), sde.marginal_std(t)
    return batch_mul(1.0 / a, x + batch_mul(s**2, score_fn(x, t)))


def batch_time(t: jax.Array, shape, dtype) -> jax.Array:
    """The scalar time ``t`` as the batch vector ``(B,)`` that score functions take."""
    return jnp.full((shape[0],), t, dtype)


def denoised_result(score, sde: SDE, x: jax.Array, ts: jax.Array, num_steps: int,
                    denoise: bool) -> SampleResult:
    """The last state, denoised to its data prediction at ``ts[-1]`` when ``denoise`` (one more
    evaluation), with the evaluation count of a ``num_steps``-point grid at one per step."""
    if denoise:
        x = data_prediction(score, sde, x, batch_time(ts[-1], x.shape, x.dtype))
    return SampleResult(x, jnp.asarray(num_steps - 1 + int(denoise), jnp.int32))


def run_solver(jitted, score_fn, sde: SDE, shape, rng: jax.Array, traced: tuple, *, eps, x_init,
               dtype, num_steps: int, grid: str | None, callback: StepCallback | None = None,
               **static: Any) -> SampleResult:
    """Check the options that the fixed-grid solvers share (the SDE, ``shape`` against ``x_init``,
    the dtype, ``0 < eps < T`` (``eps`` is also in ``traced``), ``num_steps >= 2``, ``grid`` in
    :data:`TIME_GRIDS` with ``None`` for :func:`default_grid`, ``callback`` None or callable), then
    call ``jitted(score, rng, x_init, *traced, sde=..., shape=..., dtype=..., num_steps=...,
    grid=..., **static)`` with the score function as a pytree, and ``callback=...`` only when one is
    given (the kernel calls :func:`~scoresde_jax.samplers.common.report_step` at each step)."""
    check_callback(callback)
    if callback is not None:
        static["callback"] = callback
    score, shape, dtype = checked_inputs(score_fn, sde, shape, x_init, dtype)
    check_eps(eps, sde)
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}.")
    grid = default_grid(sde) if grid is None else grid
    if grid not in TIME_GRIDS:
        raise ValueError(f"Unknown time grid {grid!r}; use one of {TIME_GRIDS}.")
    return jitted(score, rng, x_init, *traced, sde=sde, shape=shape,
                  dtype=dtype, num_steps=int(num_steps), grid=grid, **static)


def one_eval_per_step(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    """Plan of a solver with one score evaluation per step: ``num_steps = nfe - d + 1`` grid points
    (``d = 1`` with denoising)."""
    return {"num_steps": nfe - d + 1}, sde


def two_evals_per_step(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    """Plan of a solver with two score evaluations per step: ``num_steps = (nfe - d) // 2 + 1``."""
    return {"num_steps": (nfe - d) // 2 + 1}, sde
