"""Network output <-> score, and time ``t`` -> network label, as in the official score_sde code.

A *network* maps ``(x, labels) -> output``; a *score function* maps ``(x, t) -> grad_x log p_t(x)``.
The two conventions of the paper's models, chosen once here and nowhere else:

=========================  ===============================  ======================================
SDE / training             network label                    score from the output
=========================  ===============================  ======================================
VE, continuous             ``sigma(t)``                     ``output`` (NCSN++ divides by sigma itself)
VE, discrete (SMLD)        ``round((T - t) (N - 1))``:      ``output``
                           index into the *descending*
                           noise levels (NCSN/NCSNv2)
VP / sub-VP, continuous    ``(N - 1) t``                    ``-output / s(t)`` (output predicts noise)
VP, discrete (DDPM)        ``(N - 1) t`` (integer levels)   ``-output / sqrt(1 - alphas_cumprod[i])``
=========================  ===============================  ======================================

The official code hard-codes the continuous VP label as ``999 t``, which equals ``(N - 1) t`` for its
``N = 1000`` configurations; sub-VP is always treated as continuous.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from scoresde_jax.sde import SDE, VESDE, VPSDE, subVPSDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "network_labels",
    "output_to_score",
    "score_to_output",
    "get_score_fn",
    "get_model_fn",
]

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _is_continuous(sde: SDE, continuous: bool) -> bool:
    return bool(continuous) or isinstance(sde, subVPSDE)


def network_labels(sde: SDE, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """The label fed to the network at time ``t`` (see the module table)."""
    t = jnp.asarray(t)
    if isinstance(sde, VESDE):
        if continuous:
            return sde.marginal_std(t)
        return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)
    if isinstance(sde, VPSDE):
        return t * (sde.N - 1)
    raise TypeError(f"No parameterization for SDE of type {type(sde).__name__}; "
                    "use VESDE, VPSDE or subVPSDE.")


def _vp_std(sde: VPSDE, t: jax.Array, dtype, continuous: bool) -> jax.Array:
    if _is_continuous(sde, continuous):
        return sde.marginal_std(jnp.asarray(t, dtype))
    idx = (jnp.asarray(t) * (sde.N - 1)).astype(jnp.int32)
    return jnp.asarray(sde.sqrt_1m_alphas_cumprod, dtype)[idx]


def output_to_score(sde: SDE, output: jax.Array, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """Turn a network output at time ``t`` into a score (see the module table)."""
    if isinstance(sde, VESDE):
        return output
    if isinstance(sde, VPSDE):
        return batch_mul(-1.0 / _vp_std(sde, t, output.dtype, continuous), output)
    raise TypeError(f"No parameterization for SDE of type {type(sde).__name__}.")


def score_to_output(sde: SDE, score: jax.Array, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """Inverse of :func:`output_to_score` (e.g. the noise prediction ``-s(t) score`` for VP)."""
    if isinstance(sde, VESDE):
        return score
    if isinstance(sde, VPSDE):
        return batch_mul(-_vp_std(sde, t, score.dtype, continuous), score)
    raise TypeError(f"No parameterization for SDE of type {type(sde).__name__}.")


def get_score_fn(sde: SDE, model_fn: ModelFn, *, continuous: bool = True) -> ScoreFn:
    """Wrap a network ``model_fn(x, labels) -> output`` into ``score_fn(x, t) -> score``."""

    def score_fn(x, t):
        t = jnp.asarray(t, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(t)
        labels = network_labels(sde, t, continuous=continuous)
        return output_to_score(sde, model_fn(x, labels), t, continuous=continuous)

    return score_fn


def get_model_fn(model: Any, params: Any, *, train: bool = False, rng: jax.Array | None = None,
                 extra_variables: dict | None = None) -> ModelFn:
    """``model_fn(x, labels)`` applying a flax module with fixed ``params``.

    With ``train=True`` the dropout RNG ``rng`` is required.  ``extra_variables`` (e.g. batch statistics)
    are passed along unchanged.
    """
    variables = {"params": params, **(extra_variables or {})}

    def model_fn(x, labels):
        if train:
            if rng is None:
                raise ValueError("get_model_fn(train=True) needs an rng for dropout.")
            return model.apply(variables, x, labels, train=True, rngs={"dropout": rng})
        return model.apply(variables, x, labels, train=False)

    return model_fn
