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
``N = 1000`` configurations; sub-VP is always treated as continuous.  The table is
:data:`PARAMETERIZATIONS`, keyed on ``(sde.kind, continuous)``: small named functions chosen once by
:func:`get_parameterization`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "Parameterization",
    "PARAMETERIZATIONS",
    "get_parameterization",
    "network_labels",
    "output_to_score",
    "score_to_output",
    "get_score_fn",
    "get_model_fn",
]

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


class Parameterization(NamedTuple):
    """One row of the module table: ``labels(sde, t)``, ``output_to_score(sde, output, t)`` and its
    inverse ``score_to_output(sde, score, t)``."""

    labels: Callable[[SDE, jax.Array], jax.Array]
    output_to_score: Callable[[SDE, jax.Array, jax.Array], jax.Array]
    score_to_output: Callable[[SDE, jax.Array, jax.Array], jax.Array]


# --- labels ---------------------------------------------------------------------------------------
def _sigma_label(sde: SDE, t: jax.Array) -> jax.Array:
    """``sigma(t)``."""
    return sde.marginal_std(t)


def _descending_level_label(sde: SDE, t: jax.Array) -> jax.Array:
    """``round((T - t) (N - 1))``, an index into the descending noise levels of NCSN."""
    return jnp.round((sde.T - t) * (sde.N - 1)).astype(jnp.int32)


def _scaled_time_label(sde: SDE, t: jax.Array) -> jax.Array:
    """``(N - 1) t``."""
    return t * (sde.N - 1)


# --- output <-> score -----------------------------------------------------------------------------
def _identity(sde: SDE, value: jax.Array, t: jax.Array) -> jax.Array:
    """The network output is the score."""
    del sde, t
    return value


def _marginal_std(sde: SDE, t: jax.Array, dtype) -> jax.Array:
    """``s(t)`` of the continuous perturbation kernel."""
    return sde.marginal_std(jnp.asarray(t, dtype))


def _ddpm_std(sde: SDE, t: jax.Array, dtype) -> jax.Array:
    """``sqrt(1 - alphas_cumprod[i])`` at the DDPM level ``i = floor((N - 1) t)``."""
    idx = (jnp.asarray(t) * (sde.N - 1)).astype(jnp.int32)
    return jnp.asarray(sde.sqrt_1m_alphas_cumprod, dtype)[idx]


def _noise_to_score(std_fn, sde: SDE, output: jax.Array, t: jax.Array) -> jax.Array:
    """The output predicts the noise ``z`` of ``x = a x_0 + s z``: ``score = -output / s``."""
    return batch_mul(-1.0 / std_fn(sde, t, output.dtype), output)


def _score_to_noise(std_fn, sde: SDE, score: jax.Array, t: jax.Array) -> jax.Array:
    """``output = -s score``."""
    return batch_mul(-std_fn(sde, t, score.dtype), score)


_CONTINUOUS_NOISE = Parameterization(
    _scaled_time_label,
    functools.partial(_noise_to_score, _marginal_std),
    functools.partial(_score_to_noise, _marginal_std),
)

PARAMETERIZATIONS: dict[tuple[str, bool], Parameterization] = {
    ("ve", True): Parameterization(_sigma_label, _identity, _identity),
    ("ve", False): Parameterization(_descending_level_label, _identity, _identity),
    ("vp", True): _CONTINUOUS_NOISE,
    ("vp", False): Parameterization(
        _scaled_time_label,
        functools.partial(_noise_to_score, _ddpm_std),
        functools.partial(_score_to_noise, _ddpm_std),
    ),
    # sub-VP has no discrete chain: its networks are always continuous-time.
    ("subvp", True): _CONTINUOUS_NOISE,
    ("subvp", False): _CONTINUOUS_NOISE,
}
"""The module table, keyed on ``(sde.kind, continuous)``."""


def get_parameterization(sde: SDE, continuous: bool = True) -> Parameterization:
    """The :class:`Parameterization` of networks trained on ``sde`` (continuous or discrete)."""
    key = (getattr(sde, "kind", None), bool(continuous))
    if key not in PARAMETERIZATIONS:
        raise TypeError(f"No parameterization for SDE of type {type(sde).__name__}; "
                        "use VESDE, VPSDE or subVPSDE.")
    return PARAMETERIZATIONS[key]


def network_labels(sde: SDE, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """The label fed to the network at time ``t`` (see the module table)."""
    return get_parameterization(sde, continuous).labels(sde, jnp.asarray(t))


def output_to_score(sde: SDE, output: jax.Array, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """Turn a network output at time ``t`` into a score (see the module table)."""
    return get_parameterization(sde, continuous).output_to_score(sde, output, t)


def score_to_output(sde: SDE, score: jax.Array, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """Inverse of :func:`output_to_score` (e.g. the noise prediction ``-s(t) score`` for VP)."""
    return get_parameterization(sde, continuous).score_to_output(sde, score, t)


def get_score_fn(sde: SDE, model_fn: ModelFn, *, continuous: bool = True) -> ScoreFn:
    """Wrap a network ``model_fn(x, labels) -> output`` into ``score_fn(x, t) -> score``."""

    param = get_parameterization(sde, continuous)

    def score_fn(x, t):
        t = jnp.asarray(t, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(t)
        return param.output_to_score(sde, model_fn(x, param.labels(sde, t)), t)

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
