"""UniPC (Zhao et al. 2023): a multistep predictor-corrector solver of the probability-flow ODE
in data prediction, with ``B(h) = e^{-h} - 1`` ("bh2").

In the variables of :mod:`scoresde_jax.samplers.exponential` (``lambda = log(a / s)``, step ``h``,
data predictions ``m_i = x0_hat`` at the grid points), each step is the UniP-p predictor, then the
UniC corrector with the evaluation at the predicted point, which is reused by the next step: the
corrector raises the order by one at no extra evaluation (none after the last step).  Grids,
``eps`` and ``denoise`` as in :mod:`scoresde_jax.samplers.grid`; ``num_steps - 1`` evaluations,
plus one for denoising.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.samplers.common import (SampleResult, Sampler, StepCallback, initial_state,
                                         report_step)
from scoresde_jax.samplers.exponential import log_snr_grid, multistep_loop
from scoresde_jax.samplers.grid import (STATIC, batch_time, data_prediction, denoised_result,
                                        one_eval_per_step, run_solver)
from scoresde_jax.sde import SDE

__all__ = ["unipc_sample", "UNIPC"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------------
# UniPC (bh2)
# --------------------------------------------------------------------------------------------------
def _unipc_coeffs(rks, h, order, variant="bh2"):
    """UniPC's ``R rho = b`` systems for the data prediction with ``B(h) = e^{-h} - 1`` (bh2;
    bh1: ``B(h) = -h``):
    ``R_{kj} = r_j^k``, ``b_k = k! phi_{k+1}(-h) / B(h)``; returns ``(rho_predictor,
    rho_corrector)`` (``rks`` holds the ``order - 1`` past ratios, then 1 for the corrector)."""
    hh = -h
    h_phi_1 = jnp.expm1(hh)
    b_h = h_phi_1 if variant == "bh2" else hh
    h_phi_k = h_phi_1 / hh - 1.0
    factorial = 1.0
    b = []
    for k in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    b = jnp.stack(b)
    rks = jnp.stack(rks)
    R = jnp.stack([rks**k for k in range(order)])
    if order == 1:
        rho_p = jnp.zeros((0,), h.dtype)
    elif order == 2:
        rho_p = jnp.full((1,), 0.5, h.dtype)
    else:
        rho_p = jnp.linalg.solve(R[:-1, :-1], b[:-1])
    rho_c = jnp.full((1,), 0.5, h.dtype) if order == 1 else jnp.linalg.solve(R, b)
    return rho_p, rho_c, b_h, h_phi_1


@functools.partial(jax.jit, static_argnames=STATIC + ("lower_order_final", "order", "variant"))
def _unipc(score, rng, x_init, eps, *, sde, shape, dtype, num_steps, grid, denoise, order,
           lower_order_final, variant, callback=None):
    x = initial_state(sde, shape, dtype, rng, x_init)
    ts, lam, a, s = log_snr_grid(sde, num_steps, eps, grid, dtype)
    last = num_steps - 2

    def step(i, carry, p):
        x, hist = carry  # hist[k] = data prediction at grid point i - k (hist[0] evaluated)
        report_step(callback, i, ts[i], x, hist[0])
        h = lam[i + 1] - lam[i]
        rks = [(lam[i - k] - lam[i]) / h for k in range(1, p)] + [jnp.ones((), dtype)]
        d1s = [(hist[k] - hist[0]) / rks[k - 1] for k in range(1, p)]
        rho_p, rho_c, b_h, h_phi_1 = _unipc_coeffs(rks, h, p, variant)
        x_lin = (s[i + 1] / s[i]) * x - a[i + 1] * h_phi_1 * hist[0]
        x_pred = x_lin - a[i + 1] * b_h * sum((rho_p[k] * d1s[k] for k in range(p - 1)),
                                              jnp.zeros_like(x))

        def corrected(_):
            m_new = data_prediction(score, sde, x_pred, batch_time(ts[i + 1], shape, dtype))
            corr = sum((rho_c[k] * d1s[k] for k in range(p - 1)), rho_c[-1] * (m_new - hist[0]))
            return x_lin - a[i + 1] * b_h * corr, m_new

        # no corrector after the last step: its evaluation would serve no next step
        x_next, m_new = jax.lax.cond(i < last, corrected, lambda _: (x_pred, hist[0]), None)
        return x_next, (m_new,) + hist[:-1]

    m0 = data_prediction(score, sde, x, batch_time(ts[0], shape, dtype))
    hist = (m0,) + tuple(jnp.zeros_like(x) for _ in range(order - 1))
    x, _ = multistep_loop(step, order, num_steps, (x, hist), lower_order_final)
    return denoised_result(score, sde, x, ts, num_steps, denoise)


def unipc_sample(score_fn: ScoreFn | Partial, sde: SDE, shape: Sequence[int], rng: jax.Array, *,
                 num_steps: int = 10, order: int = 2, eps: float = 1e-3, grid: str | None = None,
                 lower_order_final: bool = True, variant: str = "bh2", denoise: bool = True,
                 x_init: jax.Array | None = None, dtype=None,
                 callback: StepCallback | None = None) -> SampleResult:
    """UniPC-p with the bh2 variant (Zhao et al. 2023, algorithms 2-3, data prediction):

        x_lin = (s_{i+1} / s_i) x_i - a_{i+1} (e^{-h} - 1) m_i,   D_k = (m_{i-k} - m_i) / r_k,
        r_k = (lambda_{i-k} - lambda_i) / h,   B(h) = e^{-h} - 1,
        UniP:  x~_{i+1} = x_lin - a_{i+1} B(h) sum_k rho^p_k D_k,
        UniC:  x_{i+1} = x_lin - a_{i+1} B(h) (sum_k rho^c_k D_k + rho^c_p (m~_{i+1} - m_i)),

    ``m~_{i+1} = x0_hat(x~_{i+1}, t_{i+1})`` (kept as ``m_{i+1}``), ``rho`` from ``R rho = b`` with
    ``R_{kj} = r_j^k``, ``b_k = k! phi_{k+1}(h) / B(h)`` (``rho^p = 1/2`` for ``p = 2``).  ``order``
    ``p`` in 1..3 (the corrector lifts it to ``p + 1``); warm-up at lower orders, and with
    ``lower_order_final`` (UniPC's default) the last steps too
    (:func:`~scoresde_jax.samplers.exponential.step_orders`: the last one a plain DDIM step).
    ``variant="bh1"`` (``B(h) = -h``) is the paper's other choice.  ``callback`` gets at step ``i``
    the state ``x_i`` and the data prediction the step uses (evaluated at the predicted point
    ``x~_i``, before the correction).  ``nfe = num_steps - 1 +
    denoise``.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc order must be 1, 2 or 3, got {order!r}.")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}.")
    return run_solver(_unipc, score_fn, sde, shape, rng, (eps,), eps=eps,
                      x_init=x_init, dtype=dtype, callback=callback,
                      num_steps=num_steps, grid=grid, denoise=bool(denoise), order=int(order),
                      lower_order_final=bool(lower_order_final), variant=variant)


UNIPC = Sampler(unipc_sample, one_eval_per_step,
                {"num_steps": "num_steps", "grid": "grid", "order": "order",
                 "lower_order_final": "lower_order_final", "variant": "unipc_variant"})
