"""One-step predictors of predictor-corrector sampling (Song et al., ICLR 2021, section 4.2,
appendix F/G).

Every predictor is a pure function

    predictor(score_fn, x, t, z, *, sde, probability_flow=False) -> (x, x_mean)

taking the Gaussian noise ``z`` (shape of ``x``) as an argument, so that the caller owns the
randomness and a step is a deterministic function of its inputs.  ``t`` has shape ``(B,)``; time
runs backwards (from ``T`` to ``eps``). ``x_mean`` is the step without its noise term (the
"denoised" iterate returned by the last step of a sampler). Each function carries an ``nfe``
attribute (:func:`~scoresde_jax.samplers.common.step_fn`): the number of score evaluations it makes.

All three predictors work for VE, VP and sub-VP.  The forward chains they reverse are those of
``sde.discretize``:

    x_{i+1} = m_i x_i + G_i z,      m_i = 1 + f_i(x) / x   (all three drifts are linear),

VE (SMLD): ``m_i = 1``, ``G_i^2 = sigma_i^2 - sigma_{i-1}^2``;
VP (DDPM): ``m_i = sqrt(1 - beta_i)``, ``G_i^2 = beta_i``;
sub-VP (Euler-Maruyama with ``dt = T / N``): ``m_i = 1 - beta(t_i) dt / 2``,
``G_i^2 = beta(t_i) (1 - exp(-2 int_0^t beta)) dt``.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.samplers.common import step_fn
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "euler_maruyama",
    "reverse_diffusion",
    "ancestral_sampling",
    "none",
    "chain_coeffs",
    "PREDICTORS",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def chain_coeffs(sde: SDE, t: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
    """Coefficients ``(m_i, G_i)``, each of shape ``(B,)``, of the forward chain ``x_{i+1} = m_i x_i
    + G_i z`` that ``sde.discretize`` defines at the level of ``t``.

    The drifts of VE, VP and sub-VP are linear in ``x``, so ``m_i = 1 + f_i(1)``: we evaluate
    ``sde.discretize`` on a vector of ones of shape ``(B,)``.
    """
    t = jnp.asarray(t, dtype)
    f_one, G = sde.discretize(jnp.ones(t.shape, dtype), t)
    return 1.0 + f_one, G


@step_fn(nfe=1)
def euler_maruyama(score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE,
                   probability_flow: bool = False) -> tuple[jax.Array, jax.Array]:
    """Euler-Maruyama step of the reverse-time SDE (or of the probability-flow ODE), ``dt = T / N``:

        x_mean = x - [f(x, t) - g(t)^2 score(x, t)] dt      (g^2 / 2 for the probability flow)
        x      = x_mean + g(t) sqrt(dt) z                    (no noise for the probability flow)
    """
    dt = sde.T / sde.N
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    x_mean = x - drift * dt
    return x_mean + batch_mul(diffusion * math.sqrt(dt), z), x_mean


@step_fn(nfe=1)
def reverse_diffusion(score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE,
                      probability_flow: bool = False) -> tuple[jax.Array, jax.Array]:
    """Reverse-diffusion step: the forward chain ``(f_i, G_i) = sde.discretize`` run backwards,

        x_mean = x - [f_i(x) - G_i^2 score(x, t)]       (G_i^2 / 2 for the probability flow)
        x      = x_mean + G_i z                          (no noise for the probability flow)
    """
    f, G = sde.reverse(score_fn, probability_flow).discretize(x, t)
    x_mean = x - f
    return x_mean + batch_mul(G, z), x_mean


@step_fn(nfe=1)
def ancestral_sampling(score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE,
                       probability_flow: bool = False) -> tuple[jax.Array, jax.Array]:
    """Ancestral sampling: a draw from an approximation of the reverse kernel ``p(x_{i-1} | x_i)``
    of the forward chain ``x_i = m_i x_{i-1} + G_i z`` (see :func:`chain_coeffs`).

    Mean (exact, by Tweedie's formula for the Gaussian step:
    ``E[m_i x_{i-1} | x_i] = x_i + G_i^2 score_i(x_i)``):

        x_mean = (x + G_i^2 score(x, t)) / m_i

    with the standard deviation ``std = sde.ancestral_std(t, dtype)`` of the step noise, per SDE:

    VE (SMLD, as the official code): ``x_mean = x + (sigma_i^2 - sigma_{i-1}^2) score`` with the
    posterior standard deviation of ``q(x_{i-1} | x_i, x_0)``: ``std = sigma_{i-1} G_i / sigma_i``.

    VP (DDPM, as the official code): ``x_mean = (x + beta_i score) / sqrt(1 - beta_i)``,
    ``std = sqrt(beta_i) = G_i`` (DDPM's ``sigma_t^2 = beta_t`` choice).

    sub-VP (the official code crashes here: it reads the DDPM ``discrete_betas``, which are not
    sub-VP's chain): the same construction on sub-VP's own Euler-Maruyama chain
    ``m_i = 1 - beta(t) dt / 2``, ``G_i = g(t) sqrt(dt)`` with, as for VP (same drift),
    ``std = G_i``.  To first order in ``dt`` this coincides with the reverse-diffusion predictor;
    both converge to the reverse-time SDE.

    Ancestral sampling has no probability-flow version: ``probability_flow=True`` raises
    ``ValueError``.
    """
    if probability_flow:
        raise ValueError(
            "ancestral_sampling has no probability-flow version; use predictor='reverse_diffusion' "
            "or 'euler_maruyama' with probability_flow=True."
        )
    m, G = chain_coeffs(sde, t, x.dtype)
    score = score_fn(x, t)
    x_mean = batch_mul(1.0 / m, x + batch_mul(G**2, score))
    return x_mean + batch_mul(sde.ancestral_std(t, x.dtype), z), x_mean


@step_fn(nfe=0)
def none(score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE,
         probability_flow: bool = False) -> tuple[jax.Array, jax.Array]:
    """Identity predictor (corrector-only sampling, e.g. annealed Langevin dynamics of NCSN): ``(x,
    x)``."""
    del score_fn, t, z, sde, probability_flow
    return x, x


PREDICTORS = {f.__name__: f for f in (euler_maruyama, reverse_diffusion, ancestral_sampling, none)}
"""Predictors by name (the official config names ``config.sampling.predictor``)."""
