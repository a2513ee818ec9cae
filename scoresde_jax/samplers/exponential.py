"""Exponential-integrator solvers of the probability-flow ODE in data prediction: DDIM and
DPM-Solver++ (2M, 3M, 2S).

With ``lambda = log(a / s)`` (half log-SNR), ``h_i = lambda_{i+1} - lambda_i`` and the data
prediction ``x0_hat`` (:func:`~scoresde_jax.samplers.grid.data_prediction`), the exact solution of
the probability-flow ODE of VE, VP and sub-VP alike is (Lu et al. 2022b, eq. 9)

    x_{i+1} = (s_{i+1} / s_i) x_i + a_{i+1} int_0^h e^{u - h} x0_hat(lambda_i + u) du,

and expanding ``x0_hat`` in ``lambda`` gives, with ``phi_1 = e^{-h} - 1``, ``phi_2 = phi_1 / h +
1``, ``phi_3 = phi_2 / h - 1/2``,

    x_{i+1} = (s_{i+1} / s_i) x_i - a_{i+1} [phi_1 x0 - h phi_2 x0' + h^2 phi_3 x0''] + O(h^4).

* :func:`ddim_sample` -- DDIM (Song, Meng, Ermon 2021), the first-order term (and its stochastic
  version, ``eta > 0``), written for a general kernel; with ``a = 1`` it is its VE analogue, the
  Euler step of the probability-flow ODE in ``sigma`` (``eta = 0``).
* :func:`dpm_solver_pp_sample` -- DPM-Solver++(2M) (Lu et al. 2022b, algorithm 2): ``x0'`` from the
  last two data predictions.
* :func:`dpm_solver_pp_3m_sample` -- DPM-Solver++(3M): ``x0'``, ``x0''`` from the last three data
  predictions (divided differences on the non-uniform ``lambda`` grid), first and second order for
  the first two steps.
* :func:`dpm_solver_pp_2s_sample` -- DPM-Solver++(2S) (Lu et al. 2022b, algorithm 1): single-step,
  one intermediate evaluation at ``lambda_i + r h`` (``r = 1/2``), two evaluations per step.

Grids, ``eps``, ``denoise`` and ``callback`` (at step ``i``: ``t_i``, ``x_i`` and ``x0_hat(x_i,
t_i)``; :mod:`~scoresde_jax.samplers.common`) as in :mod:`scoresde_jax.samplers.grid`: ``num_steps`` grid times
(default :func:`~scoresde_jax.samplers.grid.default_grid`); ``num_steps - 1`` evaluations for DDIM,
2M and 3M, ``2 (num_steps - 1)`` for 2S, plus one for denoising (Tweedie's ``x0_hat`` at ``eps``).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.samplers.common import (SampleResult, Sampler, StepCallback, initial_state,
                                         report_step)
from scoresde_jax.samplers.grid import (STATIC, batch_time, data_prediction, denoised_result,
                                        one_eval_per_step, run_solver, sigma_bar, t_of_sigma_bar,
                                        time_grid, two_evals_per_step)
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "ddim_sample",
    "dpm_solver_pp_sample",
    "dpm_solver_pp_3m_sample",
    "dpm_solver_pp_2s_sample",
    "step_orders",
    "multistep_loop",
    "log_snr_grid",
    "DDIM",
    "DPM_SOLVER_PP",
    "DPM_SOLVER_PP_3M",
    "DPM_SOLVER_PP_2S",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def log_snr_grid(sde: SDE, num_steps: int, eps, grid: str, dtype):
    """The grid times ``ts`` and, at each, ``lambda = -log sigma_bar``, ``a`` and ``s``."""
    ts = time_grid(sde, num_steps, eps, grid, dtype=dtype)
    return ts, -jnp.log(sigma_bar(sde, ts)), sde.mean_coeff(ts), sde.marginal_std(ts)


def step_orders(order: int, num_steps: int, lower_order_final: bool) -> list[int]:
    """The (static) order of each of the ``num_steps - 1`` steps: ``min(order, i + 1)`` (warm-up
    from the available history), and with ``lower_order_final`` also ``<= n - i`` (the last step
    first order, the one before it second...; DPM-Solver's and UniPC's ``lower_order_final``)."""
    n = num_steps - 1
    return [min(order, i + 1, n - i if lower_order_final else order) for i in range(n)]


def multistep_loop(step, order, num_steps, carry, lower_order_final=False):
    """The steps of :func:`step_orders`: those below ``order`` unrolled (static), the run at
    ``order`` in one ``fori_loop``."""
    orders = step_orders(order, num_steps, lower_order_final)
    full = [i for i, p in enumerate(orders) if p == order]
    lo, hi = (full[0], full[-1] + 1) if full else (len(orders), len(orders))
    for i in range(lo):
        carry = step(i, carry, orders[i])
    carry = jax.lax.fori_loop(lo, hi, lambda i, c: step(i, c, order), carry)
    for i in range(hi, len(orders)):
        carry = step(i, carry, orders[i])
    return carry


# --------------------------------------------------------------------------------------------------
# DDIM
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=STATIC + ("stochastic",))
def _ddim(score, rng, x_init, eta, eps, *, sde, shape, dtype, num_steps, grid, denoise, stochastic,
          callback=None):
    k_init, k_steps = jax.random.split(rng)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    ts = time_grid(sde, num_steps, eps, grid, dtype=dtype)
    eta = jnp.asarray(eta, dtype)

    def step(i, x):
        t, u = batch_time(ts[i], shape, dtype), batch_time(ts[i + 1], shape, dtype)
        a_t, s_t, a_u, s_u = (
            sde.mean_coeff(t),
            sde.marginal_std(t),
            sde.mean_coeff(u),
            sde.marginal_std(u),
        )
        x0 = data_prediction(score, sde, x, t)
        report_step(callback, i, ts[i], x, x0)
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
    return denoised_result(score, sde, x, ts, num_steps, denoise)


def ddim_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array, *,
                num_steps: int = 50, eta: float = 0.0, eps: float = 1e-3, grid: str | None = None,
                denoise: bool = True, x_init: jax.Array | None = None, dtype=None,
                callback: StepCallback | None = None) -> SampleResult:
    """DDIM on the kernel ``N(a x_0, s^2 I)`` from ``t`` to ``u < t`` (Song, Meng, Ermon 2021, eq.
    12):

        x0 = x0_hat(x, t),   noise = (x - a_t x0) / s_t,
        sigma^2 = eta^2 s_u^2 (1 - (a_t s_u / (a_u s_t))^2)   (eta = 1: DDPM posterior variance)
        x_u = a_u x0 + sqrt(s_u^2 - sigma^2) noise + sigma z

    For VP (``s^2 = 1 - a^2``) this is DDIM verbatim; for sub-VP the same formula on its own ``(a,
    s)``; for VE (``a = 1``, ``s = sigma``) with ``eta = 0`` it is ``x_u = x0 + (sigma_u / sigma_t)
    (x - x0)``, the Euler step of the probability-flow ODE in ``sigma``.  ``eta = 0`` (default) is
    deterministic.  The default grid is :func:`~scoresde_jax.samplers.grid.default_grid` (VP /
    sub-VP: quadratic in ``t``; VE: log-SNR).  DDIM is first order in ``lambda``: its error is the
    sum over steps of ``h^2 |d x0_hat / d lambda|``, so what counts is how many steps fall where
    ``x0_hat`` moves; a log-SNR grid also spends steps at very large and very small ``sigma_bar``,
    where ``x0_hat`` barely moves.  ``uniform`` has the opposite limit: its last step spans ``0.5
    log(1 + 1 / (n eps))`` of log-SNR (~0.7 at 320 steps for ``eps = 1e-3``), which skips fine
    structure at small noise (images); the quadratic grid's last step shrinks as ``1 / (n
    sqrt(eps))``.  ``nfe = num_steps - 1 + denoise``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}.")
    return run_solver(_ddim, score_fn, sde, shape, rng, (eta, eps), eps=eps,
                      x_init=x_init, dtype=dtype, callback=callback,
                      num_steps=num_steps, grid=grid, denoise=bool(denoise),
                      stochastic=bool(eta != 0))


# --------------------------------------------------------------------------------------------------
# DPM-Solver++(2M)
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=STATIC + ("lower_order_final",))
def _dpm_pp(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, denoise,
            lower_order_final, callback=None):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts = time_grid(sde, num_steps, eps, grid, dtype=dtype)
    lam = -jnp.log(sigma_bar(sde, ts))
    a_all, s_all = sde.mean_coeff(ts), sde.marginal_std(ts)

    def step(i, carry):
        x, x0_prev = carry
        x0 = data_prediction(score, sde, x, batch_time(ts[i], shape, dtype))
        report_step(callback, i, ts[i], x, x0)
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
    return denoised_result(score, sde, x, ts, num_steps, denoise)


def dpm_solver_pp_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int],
                         rng: jax.Array, *, num_steps: int = 20, eps: float = 1e-3,
                         grid: str | None = None, lower_order_final: bool = True,
                         denoise: bool = True, x_init: jax.Array | None = None,
                         dtype=None, callback: StepCallback | None = None) -> SampleResult:
    """DPM-Solver++(2M) (Lu et al. 2022b, algorithm 2), multistep, data prediction ``x0_hat`` from
    the score.

    With ``lambda = log(a / s)`` and ``h_i = lambda_{i+1} - lambda_i``, the exact solution
    ``x_{i+1} = (s_{i+1} / s_i) x_i + s_{i+1} int e^lambda x0_hat dlambda`` is approximated by

        x_{i+1} = (s_{i+1} / s_i) x_i - a_{i+1} (e^{-h_i} - 1) D_i,
        D_0 = x0_hat_0,
        D_i = (1 + 1 / (2 r_i)) x0_hat_i - x0_hat_{i-1} / (2 r_i),   r_i = h_{i-1} / h_i.

    Written for VP-type SDEs; the derivation only uses the kernel ``(a, s)``, so it is also valid
    for sub-VP and VE. ``grid`` defaults to :func:`~scoresde_jax.samplers.grid.default_grid`;
    ``lower_order_final`` (as in DPM-Solver's code) takes the last step at first order (``D =
    x0_hat``), which keeps its long last step in log-SNR stable at few steps (asymptotically one
    first-order step near ``eps``, where ``x0_hat`` barely moves).  ``nfe = num_steps - 1 +
    denoise``.
    """
    return run_solver(_dpm_pp, score_fn, sde, shape, rng, (eps,), eps=eps,
                      x_init=x_init, dtype=dtype, callback=callback,
                      num_steps=num_steps, grid=grid, denoise=bool(denoise),
                      lower_order_final=bool(lower_order_final))


# --------------------------------------------------------------------------------------------------
# DPM-Solver++(3M)
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=STATIC + ("lower_order_final",))
def _dpm_3m(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, denoise,
            lower_order_final, callback=None):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts, lam, a, s = log_snr_grid(sde, num_steps, eps, grid, dtype)

    def step(i, carry, order):
        x, m1, m2 = carry  # data predictions at grid points i - 1, i - 2
        m0 = data_prediction(score, sde, x, batch_time(ts[i], shape, dtype))
        report_step(callback, i, ts[i], x, m0)
        h = lam[i + 1] - lam[i]
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1.0
        phi3 = phi2 / h - 0.5
        x_next = (s[i + 1] / s[i]) * x - a[i + 1] * phi1 * m0
        if order >= 2:
            h0 = lam[i] - lam[i - 1]
            d1_0 = (m0 - m1) / h0  # ~ x0' - (h0 / 2) x0''
            if order == 2:
                x_next = x_next + a[i + 1] * h * phi2 * d1_0
            else:
                h1 = lam[i - 1] - lam[i - 2]
                d1_1 = (m1 - m2) / h1
                d2 = 2.0 * (d1_0 - d1_1) / (h0 + h1)  # ~ x0''
                d1 = d1_0 + 0.5 * h0 * d2  # ~ x0'
                x_next = x_next + a[i + 1] * (h * phi2 * d1 - h**2 * phi3 * d2)
        return x_next, m0, m1

    zero = jnp.zeros_like(x)
    x, _, _ = multistep_loop(step, 3, num_steps, (x, zero, zero), lower_order_final)
    return denoised_result(score, sde, x, ts, num_steps, denoise)


def dpm_solver_pp_3m_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int],
                            rng: jax.Array, *, num_steps: int = 10, eps: float = 1e-3,
                            grid: str | None = None, lower_order_final: bool = True,
                            denoise: bool = True, x_init: jax.Array | None = None,
                            dtype=None, callback: StepCallback | None = None) -> SampleResult:
    """DPM-Solver++(3M), third-order multistep in data prediction (Lu et al. 2022b, appendix):

        D2 = 2 ((m0 - m1) / h0 - (m1 - m2) / h1) / (h0 + h1),   D1 = (m0 - m1) / h0 + h0 D2 / 2,
        x_{i+1} = (s_{i+1} / s_i) x_i - a_{i+1} [phi_1 m0 - h phi_2 D1 + h^2 phi_3 D2]

    with ``m_k = x0_hat`` at grid point ``i - k`` and ``h_k = lambda_{i-k} - lambda_{i-k-1}``
    (``D1``, ``D2`` the divided-difference estimates of ``x0'``, ``x0''``; steps 0 and 1 use first
    and second order).  The official code (``multistep_dpm_solver_third_update``, also in
    k-diffusion and diffusers) uses ``D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 x0'' / 2`` with the same
    ``phi_3`` coefficient, i.e. half of the Taylor term ``-h^2 phi_3 x0''``: it converges at
    second order only (``tests/test_samplers_solvers.py`` pins third order here).
    ``lower_order_final``: the last two steps at first and second order (module
    :func:`step_orders`).  ``nfe = num_steps - 1 + denoise``.
    """
    return run_solver(_dpm_3m, score_fn, sde, shape, rng, (eps,), eps=eps,
                      x_init=x_init, dtype=dtype, callback=callback,
                      num_steps=num_steps, grid=grid, denoise=bool(denoise),
                      lower_order_final=bool(lower_order_final))


# --------------------------------------------------------------------------------------------------
# DPM-Solver++(2S)
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=STATIC + ("lower_order_final",))
def _dpm_2s(score, rng, x_init, eps, r, *, sde, shape, dtype, num_steps, grid, denoise,
            lower_order_final, callback=None):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts, lam, a, s = log_snr_grid(sde, num_steps, eps, grid, dtype)
    lo, hi = ts[-1], ts[0]

    def step(i, x):
        h = lam[i + 1] - lam[i]
        t_mid = t_of_sigma_bar(sde, jnp.exp(-(lam[i] + r * h)), lo, hi)
        a_mid, s_mid = sde.mean_coeff(t_mid), sde.marginal_std(t_mid)
        m0 = data_prediction(score, sde, x, batch_time(ts[i], shape, dtype))
        report_step(callback, i, ts[i], x, m0)
        u = (s_mid / s[i]) * x - a_mid * jnp.expm1(-r * h) * m0
        m_mid = data_prediction(score, sde, u, batch_time(t_mid, shape, dtype))
        d = (1.0 - 0.5 / r) * m0 + (0.5 / r) * m_mid
        return (s[i + 1] / s[i]) * x - a[i + 1] * jnp.expm1(-h) * d

    x = jax.lax.fori_loop(0, num_steps - 1, step, x)
    res = denoised_result(score, sde, x, ts, num_steps, denoise)
    return SampleResult(res.x, res.nfe + num_steps - 1)


def dpm_solver_pp_2s_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int],
                            rng: jax.Array, *, num_steps: int = 10, r: float = 0.5,
                            eps: float = 1e-3, grid: str | None = None, denoise: bool = True,
                            x_init: jax.Array | None = None, dtype=None,
                            callback: StepCallback | None = None) -> SampleResult:
    """DPM-Solver++(2S) (Lu et al. 2022b, algorithm 1), single-step second order:

        u = (s_mid / s_i) x_i - a_mid (e^{-r h} - 1) x0_hat(x_i, t_i),   lambda_mid = lambda_i + r h,
        D = (1 - 1/(2r)) x0_hat(x_i, t_i) + x0_hat(u, t_mid) / (2r),
        x_{i+1} = (s_{i+1} / s_i) x_i - a_{i+1} (e^{-h} - 1) D

    (``t_mid`` by inverting ``sigma_bar``).  ``nfe = 2 (num_steps - 1) + denoise``.
    """
    if not 0.0 < r < 1.0:
        raise ValueError(f"r (the intermediate point as a fraction of the step) must lie in (0, 1), "
                         f"got {r}.")
    return run_solver(_dpm_2s, score_fn, sde, shape, rng, (eps, r), eps=eps,
                      x_init=x_init, dtype=dtype, callback=callback,
                      num_steps=num_steps, grid=grid, denoise=bool(denoise),
                      lower_order_final=False)


DDIM = Sampler(ddim_sample, one_eval_per_step,
               {"num_steps": "num_steps", "eta": "eta", "grid": "grid"})
DPM_SOLVER_PP = Sampler(dpm_solver_pp_sample, one_eval_per_step,
                        {"num_steps": "num_steps", "grid": "grid",
                         "lower_order_final": "lower_order_final"})
DPM_SOLVER_PP_3M = Sampler(dpm_solver_pp_3m_sample, one_eval_per_step,
                           {"num_steps": "num_steps", "grid": "grid",
                            "lower_order_final": "lower_order_final"})
DPM_SOLVER_PP_2S = Sampler(dpm_solver_pp_2s_sample, two_evals_per_step,
                           {"num_steps": "num_steps", "grid": "grid", "r": "r"})
