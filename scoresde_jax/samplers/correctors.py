"""One-step correctors of predictor-corrector sampling (Song et al., ICLR 2021, section 4.2,
algorithms 4-5).

Every corrector is a pure function

    corrector(score_fn, x, t, z, *, sde, snr=0.16) -> (x, x_mean)

making ONE Langevin MCMC step targeting ``p_t`` with the Gaussian noise ``z`` (shape of ``x``)
passed in; the sampler loops it ``n_steps`` times with fresh noise.  ``t`` has shape ``(B,)``.  Each
function carries an ``nfe`` attribute (score evaluations per step;
:func:`~scoresde_jax.samplers.common.step_fn`).

Step-size factor ``alpha_i`` (:func:`corrector_alpha`), for VE, VP and sub-VP
-------------------------------------------------------------------------------
Both correctors scale their step by ``alpha_i``, the squared contraction ``m_i^2`` of one step of
the forward chain ``x_{i+1} = m_i x_i + G_i z`` of ``sde.discretize`` (the ratio ``a_{i+1}^2 /
a_i^2`` of the signal variances of adjacent levels):

* VE (SMLD chain, ``f_i = 0``): ``alpha_i = 1``, as the official code.
* VP (DDPM chain, ``m_i = sqrt(1 - beta_i)``): ``alpha_i = 1 - beta_i``, the paper's algorithm 5 and
  the official ``sde.alphas[timestep]``.
* sub-VP: the official code looks up ``sde.alphas`` for sub-VP too (``isinstance(sde, subVPSDE)``),
  which crashes there (its subVPSDE has no DDPM tables) and would in any case be the table of
  *another* chain, the DDPM one. Sub-VP's own chain is the Euler-Maruyama one, ``m_i = 1 + c(t) dt =
  1 - beta(t) dt / 2`` with ``dt = T / N``, so

      alpha_i = (1 - beta(t) dt / 2)^2 = exp(-beta(t) dt) + O(dt^2)
              = a(t)^2 / a(t - dt)^2 + O(dt^2).

  Sub-VP shares VP's drift, hence ``a(t)``: this equals VP's ``1 - beta_i = 1 - beta(t_i) / N`` to
  first order in ``1 / N``, so a signal-to-noise ratio tuned for VP keeps its meaning for sub-VP.
  The noise scale of the target ``p_t`` enters separately: through ``||score||`` (Langevin) or
  through ``std = s(t) = 1 - a(t)^2`` (annealed Langevin), which is sub-VP's own marginal std.

Consequence: with a predictor, both correctors sample sub-VP as well as VP.  Corrector-only
sampling with annealed Langevin is slow to track ``p_t`` under sub-VP: ``s(t) ~ beta_min t`` near
``t = 0`` (VP: ``sqrt(beta_min t)``), so the steps ``2 alpha (snr s)^2`` of the last levels vanish
before the iterate has caught up.  The Langevin corrector adapts its step to ``||score||`` and does
not have this problem.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from scoresde_jax.samplers.common import step_fn
from scoresde_jax.samplers.predictors import chain_coeffs
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = ["langevin", "annealed_langevin", "none", "corrector_alpha", "CORRECTORS"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def corrector_alpha(sde: SDE, t: jax.Array, dtype) -> jax.Array:
    """``alpha_i = m_i^2``, shape ``(B,)``: 1 for VE, ``1 - beta_i`` for VP, ``(1 - beta(t) T /
    (2N))^2`` for sub-VP (derivation in the module docstring)."""
    m, _ = chain_coeffs(sde, t, dtype)
    return m**2


def _langevin_step(score, x, z, step_size):
    """``x_mean = x + eps score``, ``x = x_mean + sqrt(2 eps) z``."""
    x_mean = x + batch_mul(step_size, score)
    return x_mean + batch_mul(jnp.sqrt(2.0 * step_size), z), x_mean


@step_fn(nfe=1)
def langevin(
    score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE, snr: float = 0.16
) -> tuple[jax.Array, jax.Array]:
    """Langevin corrector with the signal-to-noise step-size rule (paper algorithms 4 and 5):

        eps    = 2 alpha_i (snr ||z|| / ||score||)^2
        x_mean = x + eps score(x, t),    x = x_mean + sqrt(2 eps) z

    ``||z||`` and ``||score||`` are the batch means of the per-example L2 norms, as the official
    code (``jnp.linalg.norm(...).mean()`` followed by ``pmean`` over devices): one step size for the
    whole batch.  Under ``jax.jit`` with the batch sharded over a mesh, ``jnp.mean`` over the global
    batch already is the mean across devices, so no collective is written here; inside
    ``jax.shard_map`` (per-device view) wrap the norms in ``lax.pmean`` yourself.
    """
    alpha = corrector_alpha(sde, t, x.dtype)
    score = score_fn(x, t)
    grad_norm = jnp.mean(jnp.linalg.norm(score.reshape(score.shape[0], -1), axis=-1))
    noise_norm = jnp.mean(jnp.linalg.norm(z.reshape(z.shape[0], -1), axis=-1))
    step_size = 2.0 * alpha * (snr * noise_norm / grad_norm) ** 2
    return _langevin_step(score, x, z, step_size)


@step_fn(nfe=1)
def annealed_langevin(
    score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE, snr: float = 0.16
) -> tuple[jax.Array, jax.Array]:
    """Annealed Langevin dynamics step of NCSN (the official ``AnnealedLangevinDynamics``):

        eps    = 2 alpha_i (snr s(t))^2      (s(t) the marginal std of p_0t)
        x_mean = x + eps score(x, t),    x = x_mean + sqrt(2 eps) z
    """
    alpha = corrector_alpha(sde, t, x.dtype)
    std = sde.marginal_std(jnp.asarray(t, x.dtype))
    step_size = 2.0 * alpha * (snr * std) ** 2
    return _langevin_step(score_fn(x, t), x, z, step_size)


@step_fn(nfe=0)
def none(
    score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE, snr: float = 0.16
) -> tuple[jax.Array, jax.Array]:
    """Identity corrector (predictor-only sampling): ``(x, x)``."""
    del score_fn, t, z, sde, snr
    return x, x


CORRECTORS = {f.__name__: f for f in (langevin, annealed_langevin, none)}
CORRECTORS["ald"] = annealed_langevin
"""Correctors by name (official config names ``config.sampling.corrector``; ``ald`` = annealed
Langevin)."""
