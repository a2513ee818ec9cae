"""The samplers of Karras et al. 2022 ("EDM"): Heun's method on the probability-flow ODE and the
stochastic sampler with churn, in ``y = x / a(t)`` and ``sigma_bar = s / a`` (so that they serve VE,
VP and sub-VP alike; :mod:`scoresde_jax.samplers.grid`).

* :func:`heun_sample` -- algorithm 1 (deterministic) on a chosen time grid (default EDM's ``rho =
  7`` spacing in ``sigma_bar``).
* :func:`edm_sample` -- algorithm 2: at each grid point noise is added to raise ``sigma_bar`` by
  ``gamma``, then one Heun step of the probability-flow ODE.

Both take two score evaluations per step and, with ``denoise`` (default), a last Euler step to
``sigma_bar = 0``, which is the data prediction ``x0_hat(x, eps)``: ``nfe = 2 (num_steps - 1) +
denoise`` (EDM's 35 for 18 steps).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.samplers.common import (SampleResult, Sampler, StepCallback, initial_state,
                                         report_step)
from scoresde_jax.samplers.grid import (STATIC, batch_time, data_prediction, run_solver, sigma_bar,
                                        t_of_sigma_bar, time_grid, two_evals_per_step)
from scoresde_jax.sde import SDE

__all__ = ["heun_sample", "edm_sample", "HEUN", "EDM"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------------
# Heun (EDM)
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=STATIC + ("rho",))
def _heun(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, rho, denoise,
          callback=None):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts = time_grid(sde, num_steps, eps, grid, rho=rho, dtype=dtype)
    a_all, sb_all = sde.mean_coeff(ts), sigma_bar(sde, ts)

    def slope(y, i):
        """``d y / d sigma_bar = (y - x0_hat) / sigma_bar`` at grid point ``i`` for ``y = x /
        a``."""
        x0 = data_prediction(score, sde, a_all[i] * y, batch_time(ts[i], shape, dtype))
        return (y - x0) / sb_all[i]

    def step(i, y):
        dsb = sb_all[i + 1] - sb_all[i]
        x = a_all[i] * y
        x0 = data_prediction(score, sde, x, batch_time(ts[i], shape, dtype))
        report_step(callback, i, ts[i], x, x0)
        d = (y - x0) / sb_all[i]
        y_euler = y + dsb * d
        return y + 0.5 * dsb * (d + slope(y_euler, i + 1))

    y = jax.lax.fori_loop(0, num_steps - 1, step, x / a_all[0])
    if denoise:
        x = data_prediction(score, sde, a_all[-1] * y, batch_time(ts[-1], shape, dtype))
    else:
        x = a_all[-1] * y
    return SampleResult(x, jnp.asarray(2 * (num_steps - 1) + int(denoise), jnp.int32))


def heun_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array, *,
                num_steps: int = 18, eps: float = 1e-3, grid: str = "edm", rho: float = 7.0,
                denoise: bool = True, x_init: jax.Array | None = None, dtype=None,
                callback: StepCallback | None = None) -> SampleResult:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, algorithm 1,
    deterministic) in ``y = x / a(t)`` and ``sigma_bar = s / a``:

        d_i = (y_i - x0_hat_i) / sigma_bar_i,   y' = y_i + (sigma_bar_{i+1} - sigma_bar_i) d_i,
        y_{i+1} = y_i + (sigma_bar_{i+1} - sigma_bar_i) (d_i + d'(y', t_{i+1})) / 2

    on ``grid`` (default EDM's ``rho = 7`` spacing in ``sigma_bar``, mapped back to ``t``).
    ``num_steps = 18`` gives EDM's 35 evaluations.  ``callback`` (:mod:`~scoresde_jax.samplers.common`)
    gets ``x_i`` and ``x0_hat(x_i, t_i)`` at step ``i``.
    """
    return run_solver(_heun, score_fn, sde, shape, rng, (eps,), eps=eps, x_init=x_init, dtype=dtype,
                      callback=callback,
                      num_steps=num_steps, grid=grid, rho=float(rho), denoise=bool(denoise))


# --------------------------------------------------------------------------------------------------
# EDM stochastic sampler
# --------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=STATIC + ("rho",))
def _edm(score, rng, x_init, eps, churn, s_min, s_max, s_noise, *, sde, shape, dtype, num_steps,
         grid, rho, denoise, callback=None):
    k_init, k_steps = jax.random.split(rng)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    ts = time_grid(sde, num_steps, eps, grid, rho=rho, dtype=dtype)
    sb = sigma_bar(sde, ts)
    gamma_max = jnp.minimum(churn / (num_steps - 1), math.sqrt(2.0) - 1.0)

    def x0_hat(y, t):
        return data_prediction(score, sde, sde.mean_coeff(t) * y, batch_time(t, shape, dtype))

    def slope(y, t, sb_t):
        return (y - x0_hat(y, t)) / sb_t

    def step(i, y):
        gamma = jnp.where((sb[i] >= s_min) & (sb[i] <= s_max), gamma_max, 0.0)
        sb_hat = jnp.minimum(sb[i] * (1.0 + gamma), sb[0])  # never above sigma_bar(T)
        t_hat = t_of_sigma_bar(sde, sb_hat, ts[-1], ts[0])
        z = jax.random.normal(jax.random.fold_in(k_steps, i), shape, dtype)
        y_hat = y + jnp.sqrt(jnp.maximum(sb_hat**2 - sb[i] ** 2, 0.0)) * s_noise * z
        x0 = x0_hat(y_hat, t_hat)
        if callback is not None:  # the state before the noise, the prediction after it
            report_step(callback, i, ts[i], sde.mean_coeff(ts)[i] * y, x0)
        d = (y_hat - x0) / sb_hat
        y_euler = y_hat + (sb[i + 1] - sb_hat) * d
        return y_hat + 0.5 * (sb[i + 1] - sb_hat) * (d + slope(y_euler, ts[i + 1], sb[i + 1]))

    y = jax.lax.fori_loop(0, num_steps - 1, step, x / sde.mean_coeff(ts[:1])[0])
    x = sde.mean_coeff(ts[-1:])[0] * y
    if denoise:
        x = data_prediction(score, sde, x, batch_time(ts[-1], shape, dtype))
    return SampleResult(x, jnp.asarray(2 * (num_steps - 1) + int(denoise), jnp.int32))


def edm_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array, *,
               num_steps: int = 18, S_churn: float = 10.0, S_min: float = 0.05, S_max: float = 50.0,
               S_noise: float = 1.0, eps: float = 1e-3, grid: str = "edm", rho: float = 7.0,
               denoise: bool = True, x_init: jax.Array | None = None, dtype=None,
               callback: StepCallback | None = None) -> SampleResult:
    """EDM's stochastic sampler (Karras et al. 2022, algorithm 2) in ``y = x / a``, ``sigma_bar =
    s / a``:

        gamma_i = min(S_churn / (n - 1), sqrt(2) - 1) if S_min <= sigma_bar_i <= S_max else 0,
        sigma^_i = sigma_bar_i (1 + gamma_i),   y^ = y_i + sqrt(sigma^_i^2 - sigma_bar_i^2) S_noise z,
        then a Heun step from (y^, sigma^_i) to sigma_bar_{i+1} (as :func:`heun_sample`).

    ``S_min``/``S_max`` are in ``sigma_bar`` units; ``sigma^`` is capped at ``sigma_bar(T)`` (the
    network is not asked about ``t > T``).  ``S_churn = 0`` is :func:`heun_sample`.  ``S_noise``
    slightly above 1 (EDM: 1.003-1.007) offsets a network's denoising bias; with exact scores 1 is
    right.  ``nfe = 2 (num_steps - 1) + denoise``.  ``callback`` gets at step ``i`` the state
    ``x_i`` at ``t_i`` and the data prediction at the noised point ``(x^, t^)`` (as k-diffusion).
    """
    if S_churn < 0 or S_noise < 0 or S_min > S_max:
        raise ValueError(f"edm_sample needs S_churn >= 0, S_noise >= 0 and S_min <= S_max, got "
                         f"S_churn={S_churn}, S_noise={S_noise}, S_min={S_min}, S_max={S_max}.")
    return run_solver(_edm, score_fn, sde, shape, rng, (eps, S_churn, S_min, S_max, S_noise),
                      eps=eps, x_init=x_init, callback=callback,
                      dtype=dtype, num_steps=num_steps, grid=grid, rho=float(rho),
                      denoise=bool(denoise))


HEUN = Sampler(heun_sample, two_evals_per_step,
               {"num_steps": "num_steps", "grid": "grid", "rho": "rho"})
EDM = Sampler(edm_sample, two_evals_per_step,
              {"num_steps": "num_steps", "grid": "grid", "rho": "rho", "S_churn": "S_churn",
               "S_min": "S_min", "S_max": "S_max", "S_noise": "S_noise"})
