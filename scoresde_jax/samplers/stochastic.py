"""Stochastic few-step samplers: EDM's churned Heun sampler and the adaptive SDE solver of
"Gotta Go Fast".

* :func:`edm_sample` -- Karras et al. 2022, algorithm 2, in ``y = x / a(t)`` and ``sigma_bar = s
  / a`` (so it serves VE, VP and sub-VP): at each grid point noise is added to raise ``sigma_bar``
  by ``gamma``, then one Heun step of the probability-flow ODE.
* :func:`adaptive_sde_sample` -- Jolicoeur-Martineau et al. 2021, algorithm 1: the reverse SDE
  ``dx = [f - g^2 score] dt + g dw_bar`` with an Euler-Maruyama step and an improved-Euler step
  sharing one Brownian increment; their difference, scaled by ``max(atol, rtol max(|x'|,
  |x'_prev|))``, is the error estimate that accepts or rejects the step and sets the next one
  (``h <- min(t - eps, theta h E^{-r})``); a rejected step retries with the same normal draw.
  Each example has its own step size; ``nfe`` counts the batched evaluations (2 per iteration).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.samplers.common import (
    SampleResult,
    as_score_pytree,
    check_sde,
    check_shape_dtype,
    initial_state,
)
from scoresde_jax.samplers.fast import (
    _run,
    _sigma_bar,
    _t_of_sigma_bar,
    _vec,
    data_prediction,
    time_grid,
)
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = ["edm_sample", "adaptive_sde_sample"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------------
# EDM stochastic sampler
# --------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit, static_argnames=("sde", "shape", "dtype", "num_steps", "grid", "rho", "denoise")
)
def _edm(score, rng, x_init, eps, churn, s_min, s_max, s_noise, *, sde, shape, dtype, num_steps,
         grid, rho, denoise):
    k_init, k_steps = jax.random.split(rng)
    x = initial_state(sde, shape, dtype, k_init, x_init)
    ts = time_grid(sde, num_steps, eps, grid, rho=rho, dtype=dtype)
    sb = _sigma_bar(sde, ts)
    gamma_max = jnp.minimum(churn / (num_steps - 1), math.sqrt(2.0) - 1.0)

    def slope(y, t, sb_t):
        x0 = data_prediction(score, sde, sde.mean_coeff(t) * y, _vec(t, shape, dtype))
        return (y - x0) / sb_t

    def step(i, y):
        gamma = jnp.where((sb[i] >= s_min) & (sb[i] <= s_max), gamma_max, 0.0)
        sb_hat = jnp.minimum(sb[i] * (1.0 + gamma), sb[0])  # never above sigma_bar(T)
        t_hat = _t_of_sigma_bar(sde, sb_hat, ts[-1], ts[0])
        z = jax.random.normal(jax.random.fold_in(k_steps, i), shape, dtype)
        y_hat = y + jnp.sqrt(jnp.maximum(sb_hat**2 - sb[i] ** 2, 0.0)) * s_noise * z
        d = slope(y_hat, t_hat, sb_hat)
        y_euler = y_hat + (sb[i + 1] - sb_hat) * d
        return y_hat + 0.5 * (sb[i + 1] - sb_hat) * (d + slope(y_euler, ts[i + 1], sb[i + 1]))

    y = jax.lax.fori_loop(0, num_steps - 1, step, x / sde.mean_coeff(ts[:1])[0])
    x = sde.mean_coeff(ts[-1:])[0] * y
    if denoise:
        x = data_prediction(score, sde, x, _vec(ts[-1], shape, dtype))
    return SampleResult(x, jnp.asarray(2 * (num_steps - 1) + int(denoise), jnp.int32))


def edm_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    num_steps: int = 18,
    S_churn: float = 10.0,
    S_min: float = 0.05,
    S_max: float = 50.0,
    S_noise: float = 1.0,
    eps: float = 1e-3,
    grid: str = "edm",
    rho: float = 7.0,
    denoise: bool = True,
    x_init: jax.Array | None = None,
    dtype=None,
) -> SampleResult:
    """EDM's stochastic sampler (Karras et al. 2022, algorithm 2) in ``y = x / a``, ``sigma_bar =
    s / a``:

        gamma_i = min(S_churn / (n - 1), sqrt(2) - 1) if S_min <= sigma_bar_i <= S_max else 0,
        sigma^_i = sigma_bar_i (1 + gamma_i),   y^ = y_i + sqrt(sigma^_i^2 - sigma_bar_i^2) S_noise z,
        then a Heun step from (y^, sigma^_i) to sigma_bar_{i+1} (as :func:`heun_sample`).

    ``S_min``/``S_max`` are in ``sigma_bar`` units; ``sigma^`` is capped at ``sigma_bar(T)`` (the
    network is not asked about ``t > T``).  ``S_churn = 0`` is :func:`heun_sample`.  ``S_noise``
    slightly above 1 (EDM: 1.003-1.007) offsets a network's denoising bias; with exact scores 1 is
    right.  ``nfe = 2 (num_steps - 1) + denoise``.
    """
    if S_churn < 0 or S_noise < 0 or S_min > S_max:
        raise ValueError(f"edm_sample needs S_churn >= 0, S_noise >= 0 and S_min <= S_max, got "
                         f"S_churn={S_churn}, S_noise={S_noise}, S_min={S_min}, S_max={S_max}.")
    return _run(_edm, score_fn, sde, shape, rng, (eps, S_churn, S_min, S_max, S_noise),
                x_init=x_init, dtype=dtype, num_steps=num_steps, grid=grid, rho=float(rho),
                denoise=bool(denoise))


# --------------------------------------------------------------------------------------------------
# Gotta Go Fast: adaptive steps for the reverse SDE
# --------------------------------------------------------------------------------------------------
@functools.partial(
    jax.jit, static_argnames=("sde", "shape", "dtype", "max_iters", "denoise", "budgeted")
)
def _adaptive(score, rng, x_init, eps, rtol, atol, h_init, safety, exponent, *, sde, shape,
              dtype, max_iters, denoise, budgeted):
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


def adaptive_sde_sample(
    score_fn: ScoreFn | Partial,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.01,
    safety: float = 0.9,
    exponent: float = 0.9,
    max_nfe: int | None = None,
    max_iters: int = 10_000,
    eps: float = 1e-3,
    denoise: bool = True,
    x_init: jax.Array | None = None,
    dtype=None,
) -> SampleResult:
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
    otherwise the loop stops after ``max_iters``.
    """
    check_sde(sde)
    shape, dtype = check_shape_dtype(shape, x_init, dtype)
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
    return _adaptive(as_score_pytree(score_fn), rng, x_init, eps, rtol, atol, h_init, safety,
                     exponent, sde=sde, shape=shape, dtype=dtype, max_iters=iters,
                     denoise=bool(denoise), budgeted=budgeted)
