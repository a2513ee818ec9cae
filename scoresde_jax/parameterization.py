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
EDM (``sigma(t) = t``)     ``c_noise = log(sigma) / 4``;    ``(D - x) / sigma^2`` with ``D = c_skip x
                           the network sees ``c_in x``      + c_out output`` (EDM's preconditioning)
=========================  ===============================  ======================================

EDM's preconditioning (Karras et al. 2022, Table 1) with ``sd = sigma_data`` of the SDE:
``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``, ``c_in = 1 / sqrt(sigma^2 +
sd^2)`` (:func:`edm_coefficients`); ``D(x; sigma)`` is the denoiser of data in the model's scale.

The official code hard-codes the continuous VP label as ``999 t``, which equals ``(N - 1) t`` for its
``N = 1000`` configurations; sub-VP is always treated as continuous.  The table is
:data:`PARAMETERIZATIONS`, keyed on ``(sde.kind, continuous)``: small named functions chosen once by
:func:`get_parameterization`.

The adapter from a flax network to a score is two composable pytrees,
``get_score_fn(sde, get_model_fn(model, params), continuous=...)``: :func:`get_model_fn` applies the
module (parameters, dropout key and mode), :func:`get_score_fn` feeds it the label of ``t`` and
converts its output.  Both are :class:`jax.tree_util.Partial` objects whose static part (a frozen
dataclass: SDE, model, flags) is the ``jax.jit`` cache key and whose data are the parameters, so a
sampler, a loss or the likelihood compiles once per model and not once per parameters.  Extra
positional arguments ``score_fn(x, t, y)`` are the class labels of a conditional network.
:func:`get_logits_fn` reads a noise-conditional classifier the same way (label of ``t``, raw
logits).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "Parameterization",
    "edm_coefficients",
    "PARAMETERIZATIONS",
    "get_parameterization",
    "network_labels",
    "output_to_score",
    "score_to_output",
    "ModelApply",
    "AtTime",
    "get_model_fn",
    "get_score_fn",
    "get_logits_fn",
]

ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def _no_input_scale(sde: SDE, t: jax.Array) -> None:
    """The network sees ``x`` itself."""
    del sde, t


class Parameterization(NamedTuple):
    """One row of the module table: ``labels(sde, t)``, ``output_to_score(sde, output, t, x)``, its
    inverse ``score_to_output(sde, score, t, x)`` (``x``: the network's input state) and
    ``input_scale(sde, t)``, the ``(B,)`` factor of ``x`` the network sees (None: ``x`` itself)."""

    labels: Callable[[SDE, jax.Array], jax.Array]
    output_to_score: Callable[[SDE, jax.Array, jax.Array, jax.Array], jax.Array]
    score_to_output: Callable[[SDE, jax.Array, jax.Array, jax.Array], jax.Array]
    input_scale: Callable[[SDE, jax.Array], jax.Array | None] = _no_input_scale


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
def _identity(sde: SDE, value: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """The network output is the score."""
    del sde, t, x
    return value


def _marginal_std(sde: SDE, t: jax.Array, dtype) -> jax.Array:
    """``s(t)`` of the continuous perturbation kernel."""
    return sde.marginal_std(jnp.asarray(t, dtype))


def _ddpm_std(sde: SDE, t: jax.Array, dtype) -> jax.Array:
    """``sqrt(1 - alphas_cumprod[i])`` at the DDPM level ``i = floor((N - 1) t)``."""
    idx = (jnp.asarray(t) * (sde.N - 1)).astype(jnp.int32)
    return jnp.asarray(sde.sqrt_1m_alphas_cumprod, dtype)[idx]


def _noise_to_score(std_fn, sde: SDE, output: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """The output predicts the noise ``z`` of ``x = a x_0 + s z``: ``score = -output / s``."""
    del x
    return batch_mul(-1.0 / std_fn(sde, t, output.dtype), output)


def _score_to_noise(std_fn, sde: SDE, score: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``output = -s score``."""
    del x
    return batch_mul(-std_fn(sde, t, score.dtype), score)


def edm_coefficients(sigma: jax.Array, sigma_data: float = 0.5
                     ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """EDM's ``(c_skip, c_out, c_in, c_noise)`` at ``sigma`` (Karras et al. 2022, Table 1):
    ``sd^2 / (sigma^2 + sd^2)``, ``sigma sd / sqrt(sigma^2 + sd^2)``, ``1 / sqrt(sigma^2 + sd^2)``,
    ``log(sigma) / 4``."""
    sd2 = sigma_data**2
    r = jax.lax.rsqrt(sigma**2 + sd2)
    return sd2 / (sigma**2 + sd2), sigma * sigma_data * r, r, jnp.log(sigma) / 4


def _edm_label(sde: SDE, t: jax.Array) -> jax.Array:
    """``c_noise = log(sigma(t)) / 4``."""
    return edm_coefficients(sde.marginal_std(t), sde.sigma_data)[3]


def _edm_input_scale(sde: SDE, t: jax.Array) -> jax.Array:
    """``c_in = 1 / sqrt(sigma(t)^2 + sigma_data^2)``."""
    return edm_coefficients(sde.marginal_std(t), sde.sigma_data)[2]


def _edm_to_score(sde: SDE, output: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``score = (D - x) / sigma^2 = ((c_skip - 1) x + c_out output) / sigma^2``."""
    sigma = sde.marginal_std(jnp.asarray(t, output.dtype))
    c_skip, c_out, _, _ = edm_coefficients(sigma, sde.sigma_data)
    return batch_mul(1.0 / sigma**2, batch_mul(c_skip - 1.0, x) + batch_mul(c_out, output))


def _score_to_edm(sde: SDE, score: jax.Array, t: jax.Array, x: jax.Array) -> jax.Array:
    """``output = (x + sigma^2 score - c_skip x) / c_out``."""
    sigma = sde.marginal_std(jnp.asarray(t, score.dtype))
    c_skip, c_out, _, _ = edm_coefficients(sigma, sde.sigma_data)
    return batch_mul(1.0 / c_out, batch_mul(1.0 - c_skip, x) + batch_mul(sigma**2, score))


_EDM = Parameterization(_edm_label, _edm_to_score, _score_to_edm, _edm_input_scale)


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
    # EDM's networks are continuous in sigma
    ("edm", True): _EDM,
    ("edm", False): _EDM,
}
"""The module table, keyed on ``(sde.kind, continuous)``."""


def get_parameterization(sde: SDE, continuous: bool = True) -> Parameterization:
    """The :class:`Parameterization` of networks trained on ``sde`` (continuous or discrete)."""
    key = (getattr(sde, "kind", None), bool(continuous))
    if key not in PARAMETERIZATIONS:
        raise TypeError(f"No parameterization for SDE of type {type(sde).__name__}; "
                        "use VESDE, VPSDE, subVPSDE or EDMSDE.")
    return PARAMETERIZATIONS[key]


def network_labels(sde: SDE, t: jax.Array, *, continuous: bool = True) -> jax.Array:
    """The label fed to the network at time ``t`` (see the module table)."""
    return get_parameterization(sde, continuous).labels(sde, jnp.asarray(t))


def output_to_score(sde: SDE, output: jax.Array, t: jax.Array, *, continuous: bool = True,
                    x: jax.Array | None = None) -> jax.Array:
    """Turn a network output at time ``t`` into a score (see the module table); ``x``, the state
    the network was applied to, is needed by EDM's preconditioning."""
    return get_parameterization(sde, continuous).output_to_score(sde, output, t, _state(sde, x))


def score_to_output(sde: SDE, score: jax.Array, t: jax.Array, *, continuous: bool = True,
                    x: jax.Array | None = None) -> jax.Array:
    """Inverse of :func:`output_to_score` (e.g. the noise prediction ``-s(t) score`` for VP)."""
    return get_parameterization(sde, continuous).score_to_output(sde, score, t, _state(sde, x))


def _state(sde: SDE, x: jax.Array | None) -> jax.Array | None:
    if x is None and getattr(sde, "kind", None) == "edm":
        raise ValueError("EDM's preconditioning needs the state x: pass x=... (the network's input).")
    return x


# --- the network -> score adapter ------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelApply:
    """The static half of :func:`get_model_fn`: ``(variables, rng, x, labels[, class_labels])``
    applies ``model`` (a flax module, or a function with the signature of ``Module.apply``).

    ``train=True`` applies it in training mode with the dropout key ``rng``.  ``class_labels``
    (``(B,)`` integers) reach a class-conditional network as its ``class_labels`` argument; without
    them the network is called without that argument (its null class, or an unconditional
    network).  Frozen and compared by fields, so it is a stable ``jax.jit`` cache key."""

    model: Any
    train: bool = False

    def __call__(self, variables, rng, x, labels, class_labels=None):
        apply = self.model.apply if hasattr(self.model, "apply") else self.model
        cond = {} if class_labels is None else {"class_labels": class_labels}
        if self.train:
            return apply(variables, x, labels, train=True, rngs={"dropout": rng}, **cond)
        return apply(variables, x, labels, train=False, **cond)


@dataclasses.dataclass(frozen=True)
class AtTime:
    """The static half of :func:`get_score_fn` / :func:`get_logits_fn`: ``(model_fn, x, t,
    *class_labels)`` feeds the network ``model_fn`` the label of ``t`` and the scaled state (the row
    of ``(sde.kind, continuous)``) and, with ``score=True``, turns its output into the score.  ``t`` takes the
    dtype of floating ``x``; ``class_labels`` are passed on to ``model_fn``."""

    sde: SDE
    continuous: bool = True
    score: bool = True

    def __call__(self, model_fn, x, t, *class_labels):
        param = get_parameterization(self.sde, self.continuous)
        t = jnp.asarray(t, x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.asarray(t)
        c_in = param.input_scale(self.sde, t)
        x_in = x if c_in is None else batch_mul(c_in, x)
        out = model_fn(x_in, param.labels(self.sde, t), *class_labels)
        return param.output_to_score(self.sde, out, t, x) if self.score else out


def _as_pytree(fn: Callable) -> Partial:
    if not callable(fn):
        raise TypeError(f"model_fn must be a callable model_fn(x, labels), got {type(fn).__name__}.")
    return fn if isinstance(fn, Partial) else Partial(fn)


def get_model_fn(model: Any, params: Any, *, train: bool = False,
                 rng: jax.Array | None = None) -> Partial:
    """``model_fn(x, labels, class_labels=None)``: the flax module ``model`` applied with fixed
    ``params`` (see :class:`ModelApply`).

    A :class:`jax.tree_util.Partial` whose data are ``params`` and ``rng``: passed to a jitted
    sampler, loss or likelihood it compiles once per model, not once per parameters.  With
    ``train=True`` the dropout key ``rng`` is required.
    """
    if not (hasattr(model, "apply") or callable(model)):
        raise TypeError(f"model must be a flax module or an apply function, got {type(model).__name__}.")
    if train and rng is None:
        raise ValueError("get_model_fn(train=True) needs an rng for dropout.")
    return Partial(ModelApply(model, bool(train)), {"params": params}, rng)


def get_score_fn(sde: SDE, model_fn: ModelFn, *, continuous: bool = True) -> Partial:
    """``score_fn(x, t, *class_labels)`` of a network ``model_fn(x, labels, *class_labels)``:

        score(x, t) = output_to_score(sde, model_fn(x, labels(sde, t)), t)

    with the row of ``(sde.kind, continuous)`` of the module table.  The one network -> score
    adapter of the library: ``get_score_fn(sde, get_model_fn(model, params), continuous=c)`` is
    the score of a flax network for samplers, losses, guidance and the likelihood alike (called
    with ``(x, t, y)`` it is the label score of a class-conditional network).  A pytree
    (``Partial(AtTime(...), model_fn)``); a plain ``model_fn`` is its static part.
    """
    get_parameterization(sde, continuous)
    return Partial(AtTime(sde, bool(continuous)), _as_pytree(model_fn))


def get_logits_fn(sde: SDE, model_fn: ModelFn) -> Partial:
    """``logits_fn(x, t) = model_fn(x, labels(sde, t))`` of a noise-conditional classifier: the
    network sees the continuous-time label of ``sde`` (``sigma(t)`` for VE, ``(N - 1) t`` for VP /
    sub-VP, as the score networks) and its output is returned as is."""
    get_parameterization(sde, True)
    return Partial(AtTime(sde, True, score=False), _as_pytree(model_fn))
