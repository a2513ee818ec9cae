"""Controllable generation with an unconditional score model (Song et al., ICLR 2021, section 5
and appendix I): inpainting and colorization.  Class-conditional sampling with a time-dependent
classifier (appendix I.1) is conditioning and lives in :mod:`scoresde_jax.guidance`.

Inpainting and colorization (appendix I.2 and I.3, the official ``pc_inpainter`` / ``pc_colorizer``)
----------------------------------------------------------------------------------------------------
The known part ``Omega`` of ``x`` (``mask == 1``) is replaced, after every predictor and corrector
step at time ``t``, by a forward-perturbed copy of the data, a draw from ``p_0t(x_Omega(t) |
x_Omega(0) = data)``:

    x <- x * (1 - mask) + (a(t) data + s(t) z) * mask,        z ~ N(0, I) fresh at every
    replacement,

and the unknown part follows the unconditional reverse-time dynamics.  This approximates
``grad log p_t(x_unknown | x_known(0) = data)`` by ``grad log p_t(x_unknown | x_known(t))`` at a
random draw of ``x_known(t)`` (the paper's approximation): it is not exact.  For Gaussian data the
predictor-only version converges to a distribution whose mean and covariance differ visibly from the
exact conditional (the unknown part is pulled toward ``x_known(t)`` only as far as the *noisy*
correlation allows); the Langevin corrector steps, which relax towards ``p_t(x_unknown |
x_known(t))`` at every level (near ``t = eps`` that is the exact conditional), remove most of that
bias.  Use a corrector (``"langevin"``, ``n_steps >= 1``) for inpainting.

Colorization decouples the channels with an orthogonal matrix ``Q``
(:func:`color_decoupling_matrix`) whose first column is ``(1, 1, 1) / sqrt(3)``: in the decoupled
space ``x Q`` the first channel is ``sqrt(3) * gray`` (gray is the channel mean) and is known; the
other two are unknown.  Because ``Q`` is orthogonal, the isotropic forward perturbation ``N(a x, s^2
I)`` commutes with it, so replacing the first decoupled channel by ``a(t) sqrt(3) gray + s(t) z`` is
the inpainting rule in the decoupled space.  The result is mapped back with ``Q^T = Q^{-1}``.

All samplers are module-level ``jax.jit`` functions that take the score function as a pytree
(:func:`scoresde_jax.samplers.as_score_pytree`: pass ``jax.tree_util.Partial(fn, params)`` to keep
parameters as data); they compile once per score function, SDE, shape and static options, and work
for VE, VP and sub-VP with any predictor / corrector of :data:`scoresde_jax.samplers.PREDICTORS` /
``CORRECTORS`` by name.  A class-conditional model works the same way: pass its score at fixed
labels (:func:`scoresde_jax.guidance.label_score`, or the guided
:func:`scoresde_jax.guidance.model_score_fn`, labels and scale as data).  The loop IS
:func:`scoresde_jax.samplers.pc_sample` (at each ``t_i`` in ``linspace(T, eps, N)``, ``n_steps``
corrector steps then one predictor step, with per-step keys ``fold_in``); inpainting and
colorization give it the replacement as its ``projection``.  All samplers here take
``**pc_options``, the keyword options of :func:`scoresde_jax.samplers.pc_sample` (``predictor``,
``corrector``, ``snr``, ``n_steps``, ``probability_flow``, ``denoise``, ``eps``), with its
defaults.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scoresde_jax.samplers.common import SampleResult
from scoresde_jax.samplers.pc import pc_sample
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "pc_inpaint",
    "pc_colorize",
    "color_decoupling_matrix",
    "decouple_colors",
    "couple_colors",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------------
# colour decoupling
# --------------------------------------------------------------------------------------------------
def color_decoupling_matrix(dtype=None) -> jax.Array:
    """The orthogonal ``3 x 3`` matrix ``Q`` with columns (Gram-Schmidt on ``(1, 1, 1), e_1, e_2``)

        q_1 = (1, 1, 1) / sqrt(3),   q_2 = (2, -1, -1) / sqrt(6),   q_3 = (0, 1, -1) / sqrt(2).

    ``y = x Q`` (per pixel, ``x`` the RGB row vector) has ``y_1 = sqrt(3) mean(x)``, the gray level,
    and two chroma channels orthogonal to it; ``x = y Q^T``.  The official code uses the same matrix
    up to the sign of ``q_2``.
    """
    q = np.stack(
        [
            np.array([1.0, 1.0, 1.0]) / math.sqrt(3.0),
            np.array([2.0, -1.0, -1.0]) / math.sqrt(6.0),
            np.array([0.0, 1.0, -1.0]) / math.sqrt(2.0),
        ],
        axis=1,
    )
    return jnp.asarray(q, jnp.result_type(float) if dtype is None else dtype)


def decouple_colors(x: jax.Array) -> jax.Array:
    """``x Q`` on the last (RGB) axis: channel 0 is ``sqrt(3)`` times the gray level."""
    return x @ color_decoupling_matrix(x.dtype)


def couple_colors(y: jax.Array) -> jax.Array:
    """Inverse of :func:`decouple_colors`: ``y Q^T``."""
    return y @ color_decoupling_matrix(y.dtype).T


# --------------------------------------------------------------------------------------------------
# PC with replacement of the known part
# --------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Replacement:
    """The projection ``x <- x (1 - mask) + (a(t) known + s(t) z) mask`` in the working space: the
    data space (inpainting) or the decoupled colour space (``colorize``: ``to = decouple_colors``,
    ``back = couple_colors``).

    Static (hashable) part of the pytree ``Partial(_Replacement(sde, colorize), known, mask)`` given
    to :func:`scoresde_jax.samplers.pc_sample` as its ``projection``: ``known`` and ``mask`` are
    traced data, so the loop compiles once per SDE and space.
    """

    sde: SDE
    colorize: bool = False

    def to(self, v: jax.Array) -> jax.Array:
        return decouple_colors(v) if self.colorize else v

    def back(self, v: jax.Array) -> jax.Array:
        return couple_colors(v) if self.colorize else v

    def __call__(self, known, mask, x, x_mean, t, key):
        mean, std = self.sde.marginal_prob(known, t)
        noisy = mean + batch_mul(std, jax.random.normal(key, known.shape, known.dtype))
        x = self.back(self.to(x) * (1.0 - mask) + noisy * mask)
        x_mean = self.back(self.to(x_mean) * (1.0 - mask) + mean * mask)
        return x, x_mean

    def restore(self, known: jax.Array, mask: jax.Array, x: jax.Array) -> jax.Array:
        """Put the known part back exactly (the last replacement left ``a(eps) known + noise``)."""
        return self.back(self.to(x) * (1.0 - mask) + known * mask)


def _sample_with_replacement(score_fn, sde, known, mask, rng, colorize, pc_options):
    replace = _Replacement(sde, colorize)
    res = pc_sample(
        score_fn,
        sde,
        known.shape,
        rng,
        dtype=known.dtype,
        projection=Partial(replace, known, mask),
        **pc_options,
    )
    return SampleResult(replace.restore(known, mask, res.x), res.nfe)


def _check_data(name, x):
    if not hasattr(x, "ndim") or x.ndim < 2:
        raise ValueError(
            f"{name} must be a batch of shape (B, *D), got shape {getattr(x, 'shape', None)}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point (scaled data), got {x.dtype}.")


def pc_inpaint(
    score_fn: ScoreFn,
    sde: SDE,
    data: jax.Array,
    mask: jax.Array,
    rng: jax.Array,
    **pc_options: Any,
) -> SampleResult:
    """Inpainting by PC sampling with replacement (official ``pc_inpainter``; see the module
    docstring); ``pc_options`` are the keyword options of :func:`scoresde_jax.samplers.pc_sample`.

    ``data`` ``(B, *D)`` holds the known values where ``mask == 1`` (anything elsewhere); ``mask``
    (0/1, broadcastable to ``data``) marks the known part.  After each corrector and predictor step
    at time ``t``: ``x = x (1 - mask) + (a(t) data + s(t) z) mask``.  The returned samples equal
    ``data`` on the mask. Returns ``SampleResult(x, nfe)`` in the dtype of ``data``.
    """
    _check_data("data", data)
    mask = jnp.asarray(mask, data.dtype)
    try:
        mask = jnp.broadcast_to(mask, data.shape)
    except ValueError as e:
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to data of shape {data.shape}; "
            "give a mask of shape (B, *D) or (*D,)."
        ) from e
    return _sample_with_replacement(score_fn, sde, data, mask, rng, False, pc_options)


def pc_colorize(
    score_fn: ScoreFn,
    sde: SDE,
    gray: jax.Array,
    rng: jax.Array,
    **pc_options: Any,
) -> SampleResult:
    """Colorization by PC sampling with replacement in the decoupled colour space (official
    ``pc_colorizer``); ``pc_options`` are the keyword options of
    :func:`scoresde_jax.samplers.pc_sample`.

    ``gray`` is ``(B, *S, 1)`` (the gray level, the mean of the RGB channels) or ``(B, *S, 3)`` with
    the gray level in every channel (the official input); the score model works on ``(B, *S, 3)``
    RGB data.  The first channel of ``x Q`` (:func:`color_decoupling_matrix`), ``sqrt(3) gray``, is
    known and replaced by its forward-perturbed copy after every step.  The returned RGB samples
    have channel mean exactly ``gray``.
    """
    _check_data("gray", gray)
    if gray.shape[-1] not in (1, 3):
        raise ValueError(
            f"gray must have 1 (gray level) or 3 (gray level repeated) channels on the last axis, "
            f"got shape {gray.shape}."
        )
    level = jnp.mean(gray, axis=-1, keepdims=True)
    rgb = jnp.broadcast_to(level, gray.shape[:-1] + (3,))
    known = decouple_colors(rgb)  # (sqrt(3) gray, 0, 0)
    mask = jnp.broadcast_to(jnp.asarray([1.0, 0.0, 0.0], gray.dtype), known.shape)
    return _sample_with_replacement(score_fn, sde, known, mask, rng, True, pc_options)
