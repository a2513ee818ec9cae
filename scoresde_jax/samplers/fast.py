"""Few-step samplers on the perturbation kernel ``N(a(t) x_0, s(t)^2 I)`` of any of the SDEs.

All three work in the variables every linear SDE shares (Karras et al. 2022, eq. 4; Lu et al. 2022):

    x0_hat(x, t) = (x + s(t)^2 score(x, t)) / a(t)      (Tweedie: the data prediction E[x_0 | x_t])
    sigma_bar(t) = s(t) / a(t),   lambda(t) = -log sigma_bar(t)   (half log-SNR)

in which the probability-flow ODE of VE, VP and sub-VP alike reads ``d(x/a) / d sigma_bar = (x/a -
x0_hat) / sigma_bar``: only the marginals ``p_t`` enter, which are fixed by ``(a, s)``.

* :func:`ddim_sample` -- DDIM (Song, Meng, Ermon 2021) for VP / sub-VP, written for a general
  kernel; with ``a = 1`` it is its VE analogue, the Euler step of the probability-flow ODE in
  ``sigma`` (``eta = 0``).
* :func:`dpm_solver_pp_sample` -- DPM-Solver++(2M) (Lu et al. 2022b), multistep second order, data
  prediction.
* :func:`heun_sample` -- Heun's second-order method on the probability-flow ODE in ``(x / a,
  sigma_bar)`` (Karras et al. 2022, algorithm 1, deterministic) on a chosen time grid.

Conventions shared by the three: ``num_steps`` grid times ``t_0 = T > ... > t_{n-1} = eps`` (see
:data:`TIME_GRIDS`); ``n - 1`` solver steps between them; with ``denoise`` (default) a last step to
``t = 0`` which for all three methods is the data prediction ``x0_hat(x, eps)`` (Tweedie denoising,
the official noise removal; for Heun it is EDM's final Euler step to ``sigma = 0``).  Score
evaluations: DDIM and DPM-Solver++ ``num_steps`` (``num_steps - 1`` without denoising), Heun ``2
num_steps - 1`` (EDM's 35 for 18 steps).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.sde import SDE, VESDE
from scoresde_jax.samplers.common import (
    SampleResult,
    as_score_pytree,
    check_sde,
    check_shape_dtype,
    initial_state,
)
from scoresde_jax.utils import batch_mul

__all__ = [
    "ddim_sample",
    "dpm_solver_pp_sample",
    "heun_sample",
    "data_prediction",
    "time_grid",
    "default_grid",
    "TIME_GRIDS",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

TIME_GRIDS = ("uniform", "quadratic", "logsnr", "edm")
"""``uniform``: uniform in ``t``; ``quadratic``: uniform in ``sqrt(t)`` (DPM-Solver's
"time_quadratic"); ``logsnr``: uniform in ``lambda = -log sigma_bar``; ``edm``: ``sigma_bar_i =
(sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` with ``rho = 7``
(Karras et al. 2022).  ``grid=None`` (the ODE solvers' default) is :func:`default_grid`."""


def default_grid(sde: SDE) -> str:
    """The default grid of the ODE solvers: ``"logsnr"`` for VE (where it is uniform in ``t``),
    ``"quadratic"`` otherwise (VP, sub-VP, custom SDEs).

    Measured (``benchmarks/bench_samplers.py``, 16-D mixture, exact scores, 2048 draws): for VP the
    quadratic grid puts ~54% of its points where this data's flow bends (``0.1 < sigma_bar < 3``),
    log-SNR ~35% (it spends ~24% below ``sigma_bar = 0.1`` and ~40% above 3, where ``x0_hat`` is
    nearly constant); UniPC-2's flow error at NFE 10 / 20 is 0.056 / 0.010 on it against 0.085 /
    0.031 on log-SNR; sub-VP alike. For VE log-SNR (= uniform ``t``) stays best (0.067 / 0.036
    against 0.11 / 0.049)."""
    return "logsnr" if isinstance(sde, VESDE) else "quadratic"


def _sigma_bar(sde: SDE, t: jax.Array) -> jax.Array:
    return sde.marginal_std(t) / sde.mean_coeff(t)


def _t_of_sigma_bar(
    sde: SDE, sigma_bar: jax.Array, lo: jax.Array, hi: jax.Array, iters: int = 64
) -> jax.Array:
    """Invert the increasing map ``t -> sigma_bar(t)`` on ``[lo, hi]`` by bisection (any SDE, any
    dtype)."""

    def body(_, bounds):
        a, b = bounds
        mid = 0.5 * (a + b)
        below = _sigma_bar(sde, mid) < sigma_bar
        return jnp.where(below, mid, a), jnp.where(below, b, mid)

    a, b = jax.lax.fori_loop(
        0, iters, body, (jnp.full_like(sigma_bar, lo), jnp.full_like(sigma_bar, hi))
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
    sb_max, sb_min = _sigma_bar(sde, T[None])[0], _sigma_bar(sde, eps[None])[0]
    if kind == "logsnr":
        sb = jnp.exp(jnp.log(sb_max) + u * (jnp.log(sb_min) - jnp.log(sb_max)))
    elif kind == "edm":
        sb = (sb_max ** (1 / rho) + u * (sb_min ** (1 / rho) - sb_max ** (1 / rho))) ** rho
    else:
        raise ValueError(f"Unknown time grid {kind!r}; use one of {TIME_GRIDS}.")
    ts = _t_of_sigma_bar(sde, sb, eps, T)
    return ts.at[0].set(T).at[-1].set(eps)


def data_prediction(score_fn: ScoreFn, sde: SDE, x: jax.Array, t: jax.Array) -> jax.Array:
    """Tweedie's ``x0_hat = E[x_0 | x_t] = (x + s(t)^2 score(x, t)) / a(t)``; ``t`` of shape
    ``(B,)``."""
    t = jnp.asarray(t, x.dtype)
    a, s = sde.mean_coeff(t), sde.marginal_std(t)
    return batch_mul(1.0 / a, x + batch_mul(s**2, score_fn(x, t)))


def _run(jitted, score_fn, sde, shape, rng, traced, *, x_init, dtype, num_steps, grid, **static):
    """Check the options shared by the fast samplers, then call ``jitted(score, rng, x_init,
    *traced, sde=..., shape=..., dtype=..., num_steps=..., grid=..., **static)``."""
    check_sde(sde)
    shape, dtype = check_shape_dtype(shape, x_init, dtype)
    if int(num_steps) != num_steps or num_steps < 2:
        raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}.")
    grid = default_grid(sde) if grid is None else grid
    if grid not in TIME_GRIDS:
        raise ValueError(f"Unknown time grid {grid!r}; use one of {TIME_GRIDS}.")
    return jitted(as_score_pytree(score_fn), rng, x_init, *traced, sde=sde, shape=shape,
                  dtype=dtype, num_steps=int(num_steps), grid=grid, **static)


def _vec(t, shape, dtype):
    return jnp.full((shape[0],), t, dtype)


def _finish(score, sde, x, ts, num_steps, denoise) -> SampleResult:
    """The last state, denoised to its data prediction at ``ts[-1]`` when ``denoise`` (one more
    evaluation), with the evaluation count of a ``num_steps``-point grid."""
    if denoise:
        x = data_prediction(score, sde, x, _vec(ts[-1], x.shape, x.dtype))
    return SampleResult(x, jnp.asarray(num_steps - 1 + int(denoise), jnp.int32))


# --------------------------------------------------------------------------------------------------
# DDIM
# --------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit, static_argnames=("sde", "shape", "dtype", "num_steps", "grid", "denoise", "stochastic")
)
def _ddim(score, rng, x_init, eta, eps, *, sde, shape, dtype, num_steps, grid, denoise, stochastic):
    k_init, k_steps = jax.random.split(rng)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    ts = time_grid(sde, num_steps, eps, grid, dtype=dtype)
    eta = jnp.asarray(eta, dtype)

    def step(i, x):
        t, u = _vec(ts[i], shape, dtype), _vec(ts[i + 1], shape, dtype)
        a_t, s_t, a_u, s_u = (
            sde.mean_coeff(t),
            sde.marginal_std(t),
            sde.mean_coeff(u),
            sde.marginal_std(u),
        )
        x0 = data_prediction(score, sde, x, t)
        noise_hat = batch_mul(1.0 / s_t, x - batch_mul(a_t, x0))
        # eta^2 x variance of q(x_u | x_t, x_0): s_u^2 (s_t^2 - (a_t / a_u)^2 s_u^2) / s_t^2
        var = eta**2 * s_u**2 * jnp.maximum(1.0 - (a_t * s_u / (a_u * s_t)) ** 2, 0.0)
        x_u = batch_mul(a_u, x0) + batch_mul(jnp.sqrt(jnp.maximum(s_u**2 - var, 0.0)), noise_hat)
        if stochastic:  # static: no noise is drawn for the deterministic DDIM (eta = 0)
            x_u = x_u + batch_mul(
                jnp.sqrt(var), jax.random.normal(jax.random.fold_in(k_steps, i), shape, dtype)
            )
        return x_u

    x = jax.lax.fori_loop(0, num_steps - 1, step, x)
    return _finish(score, sde, x, ts, num_steps, denoise)


def ddim_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    num_steps: int = 50,
    eta: float = 0.0,
    eps: float = 1e-3,
    grid: str | None = None,
    denoise: bool = True,
    x_init: jax.Array | None = None,
    dtype=None,
) -> SampleResult:
    """DDIM on the kernel ``N(a x_0, s^2 I)`` from ``t`` to ``u < t`` (Song, Meng, Ermon 2021, eq.
    12):

        x0 = x0_hat(x, t),   noise = (x - a_t x0) / s_t,
        sigma^2 = eta^2 s_u^2 (1 - (a_t s_u / (a_u s_t))^2)   (eta = 1: DDPM posterior variance)
        x_u = a_u x0 + sqrt(s_u^2 - sigma^2) noise + sigma z

    For VP (``s^2 = 1 - a^2``) this is DDIM verbatim; for sub-VP the same formula on its own ``(a,
    s)``; for VE (``a = 1``, ``s = sigma``) with ``eta = 0`` it is ``x_u = x0 + (sigma_u / sigma_t)
    (x - x0)``, the Euler step of the probability-flow ODE in ``sigma``.  ``eta = 0`` (default) is
    deterministic.  The default grid is :func:`default_grid` (VP / sub-VP: quadratic in ``t``; VE:
    log-SNR).  DDIM is first order in ``lambda``: its error is the sum over steps of ``h^2 |d x0_hat
    / d lambda|``, so what counts is how many steps fall where ``x0_hat`` moves.  Measured flow
    error on the 16-D mixture (VP) at NFE 5 / 10 / 20 / 50: quadratic 0.25 / 0.16 / 0.099 / 0.053,
    uniform 0.27 / 0.17 / 0.094 / 0.051, log-SNR 0.33 / 0.19 / 0.12 / 0.061 (log-SNR spends most of
    its steps at ``sigma_bar > 3`` and ``< 0.1``, where ``x0_hat`` barely moves).  ``uniform`` has
    the opposite limit: its last step spans ``0.5 log(1 + 1 / (n eps))`` of log-SNR (~0.7 at 320
    steps for ``eps = 1e-3``), which skips fine structure at small noise (images); the quadratic
    grid's last step shrinks as ``1 / (n sqrt(eps))``.  See the module docstring for denoising and
    ``nfe``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    return _run(_ddim, score_fn, sde, shape, rng, (eta, eps), x_init=x_init, dtype=dtype,
                num_steps=num_steps, grid=grid, denoise=bool(denoise), stochastic=bool(eta != 0))


# --------------------------------------------------------------------------------------------------
# DPM-Solver++(2M)
# --------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit,
    static_argnames=("sde", "shape", "dtype", "num_steps", "grid", "denoise", "lower_order_final"),
)
def _dpm_pp(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, denoise,
            lower_order_final):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts = time_grid(sde, num_steps, eps, grid, dtype=dtype)
    lam = -jnp.log(_sigma_bar(sde, ts))
    a_all, s_all = sde.mean_coeff(ts), sde.marginal_std(ts)

    def step(i, carry):
        x, x0_prev = carry
        x0 = data_prediction(score, sde, x, _vec(ts[i], shape, dtype))
        h = lam[i + 1] - lam[i]
        h_prev = lam[i] - lam[jnp.maximum(i - 1, 0)]
        # first step: first order (DDIM); later: D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r =
        # h_{i-1} / h_i
        first = (i == 0) | (lower_order_final & (i == num_steps - 2))  # first-order steps
        half_inv_r = jnp.where(first, 0.0, 0.5 * h / jnp.where(i == 0, 1.0, h_prev))
        d = (1.0 + half_inv_r) * x0 - half_inv_r * x0_prev
        x = (s_all[i + 1] / s_all[i]) * x - a_all[i + 1] * jnp.expm1(-h) * d
        return x, x0

    x, _ = jax.lax.fori_loop(0, num_steps - 1, step, (x, jnp.zeros_like(x)))
    return _finish(score, sde, x, ts, num_steps, denoise)


def dpm_solver_pp_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    num_steps: int = 20,
    eps: float = 1e-3,
    grid: str | None = None,
    lower_order_final: bool = True,
    denoise: bool = True,
    x_init: jax.Array | None = None,
    dtype=None,
) -> SampleResult:
    """DPM-Solver++(2M) (Lu et al. 2022b, algorithm 2), multistep, data prediction ``x0_hat`` from
    the score.

    With ``lambda = log(a / s)`` and ``h_i = lambda_{i+1} - lambda_i``, the exact solution
    ``x_{i+1} = (s_{i+1} / s_i) x_i + s_{i+1} int e^lambda x0_hat dlambda`` is approximated by

        x_{i+1} = (s_{i+1} / s_i) x_i - a_{i+1} (e^{-h_i} - 1) D_i,
        D_0 = x0_hat_0,
        D_i = (1 + 1 / (2 r_i)) x0_hat_i - x0_hat_{i-1} / (2 r_i),   r_i = h_{i-1} / h_i.

    Written for VP-type SDEs; the derivation only uses the kernel ``(a, s)``, so it is also valid
    for sub-VP and VE. ``grid`` defaults to :func:`default_grid`; ``lower_order_final`` (as in
    DPM-Solver's code) takes the last step at first order (``D = x0_hat``), which keeps its long
    last step in log-SNR stable at few steps (asymptotically one first-order step near ``eps``,
    where ``x0_hat`` barely moves).  See the module docstring for denoising and ``nfe``.
    """
    return _run(_dpm_pp, score_fn, sde, shape, rng, (eps,), x_init=x_init, dtype=dtype,
                num_steps=num_steps, grid=grid, denoise=bool(denoise),
                lower_order_final=bool(lower_order_final))


# --------------------------------------------------------------------------------------------------
# Heun (EDM)
# --------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit, static_argnames=("sde", "shape", "dtype", "num_steps", "grid", "rho", "denoise")
)
def _heun(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, rho, denoise):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts = time_grid(sde, num_steps, eps, grid, rho=rho, dtype=dtype)
    a_all, sb_all = sde.mean_coeff(ts), _sigma_bar(sde, ts)

    def slope(y, i):
        """``d y / d sigma_bar = (y - x0_hat) / sigma_bar`` at grid point ``i`` for ``y = x /
        a``."""
        x0 = data_prediction(score, sde, a_all[i] * y, _vec(ts[i], shape, dtype))
        return (y - x0) / sb_all[i]

    def step(i, y):
        dsb = sb_all[i + 1] - sb_all[i]
        d = slope(y, i)
        y_euler = y + dsb * d
        return y + 0.5 * dsb * (d + slope(y_euler, i + 1))

    y = jax.lax.fori_loop(0, num_steps - 1, step, x / a_all[0])
    if denoise:
        x = data_prediction(score, sde, a_all[-1] * y, _vec(ts[-1], shape, dtype))
    else:
        x = a_all[-1] * y
    return SampleResult(x, jnp.asarray(2 * (num_steps - 1) + int(denoise), jnp.int32))


def heun_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    num_steps: int = 18,
    eps: float = 1e-3,
    grid: str = "edm",
    rho: float = 7.0,
    denoise: bool = True,
    x_init: jax.Array | None = None,
    dtype=None,
) -> SampleResult:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, algorithm 1,
    deterministic) in ``y = x / a(t)`` and ``sigma_bar = s / a``:

        d_i = (y_i - x0_hat_i) / sigma_bar_i,   y' = y_i + (sigma_bar_{i+1} - sigma_bar_i) d_i,
        y_{i+1} = y_i + (sigma_bar_{i+1} - sigma_bar_i) (d_i + d'(y', t_{i+1})) / 2

    on ``grid`` (default EDM's ``rho = 7`` spacing in ``sigma_bar``, mapped back to ``t``).
    ``num_steps = 18`` gives EDM's 35 evaluations.  See the module docstring for denoising and
    ``nfe``.
    """
    return _run(_heun, score_fn, sde, shape, rng, (eps,), x_init=x_init, dtype=dtype,
                num_steps=num_steps, grid=grid, rho=float(rho), denoise=bool(denoise))
