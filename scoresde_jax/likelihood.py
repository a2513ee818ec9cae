"""Exact likelihoods through the probability-flow ODE (Song et al., ICLR 2021, section 4.3 and
appendix D.2).

The probability-flow ODE ``dx/dt = f~(x, t) = f(x, t) - g(t)^2 / 2 * score(x, t)`` transports
``p_eps`` to ``p_T``. By the instantaneous change of variables (Chen et al., 2018), along a
trajectory ``x(t)``

    d log p_t(x(t)) / dt = -div f~(x(t), t),

so, integrating the augmented state ``(x, delta)`` with ``d delta / dt = div f~`` forward from
``eps`` to ``T``,

    log p_eps(x) = log p_T(z) + int_eps^T div f~(x(t), t) dt,        z = x(T).

``p_T`` is replaced by the prior ``sde.prior_logp`` (the only approximation besides the score and
the solver). The divergence is computed either exactly (the trace of the full Jacobian: ``D``
Jacobian-vector products, for small ``D``) or by the Hutchinson-Skilling estimator ``div f~ ~= v^T
(d f~ / dx) v`` with one probe ``v`` per example, drawn once and held fixed over the whole
trajectory (Gaussian ``v ~ N(0, I)`` or Rademacher ``v in {-1, +1}^D``; both have ``E[v v^T] = I``
so the estimate of ``log p`` is unbiased).  ``v^T J v`` is one forward-mode ``jax.jvp`` that also
returns the drift.

Each example is integrated as its own ODE (``vmap`` over the batch), so its adaptive steps, its
error control and its result do not depend on the other examples in the batch; ``nfe`` is per
example.

Bits per dimension of 8-bit data
--------------------------------
Pixels ``k in {0, ..., 255}^D`` are uniformly dequantized to ``y = (k + u) / 256 in [0, 1]^D``, ``u
~ U(0, 1)^D``. A density ``p_Y`` on ``[0, 1]^D`` gives the pixels the probability ``P(k) =
int_{cell(k)} p_Y >= ...`` and, by Jensen, ``-log2 P(k) <= E_u[-log2 p_Y(y)] + D log2 256``, so the
reported (variational) bits/dim is

    bpd = -log2 p_Y(y) / D + 8.

When the model sees the data through an affine transform ``x = scale * y + shift`` (``scale = 2``
for the centered data ``x = 2 y - 1 in [-1, 1]``), ``p_Y(y) = p_X(x) * scale^D`` and so

    bpd = -log p_X(x) / (D ln 2) + 8 - log2(scale),

i.e. ``offset = 8`` for data in ``[0, 1]`` and ``offset = 7`` for centered data in ``[-1, 1]`` (the
official code's ``log2(d inverse_scaler / dx) + 8``).  This is what ``bits_per_dim`` reports, with
``centered`` choosing the offset.

The official code evaluates the density at the *undequantized* grid points ``k / 255`` unless the
dataset was loaded with ``uniform_dequantization``.  A density evaluated on a grid is not a
probability of the pixels and can be made arbitrarily large, which gives negative
bits/dim (e.g. VP models near ``t = eps`` concentrate on the training grid).  ``dequantize=True``
does the official ``uniform_dequantization`` inside the function: data ``k / 255`` (in ``[0, 1]``
space) become ``(k + u) / 256``, then the bound above holds and ``E_u[bpd] >= 0``.

Data range check
----------------
The offset is only right for data in the range ``centered`` names, so concrete inputs are
checked: finite, and inside ``[0, 1]`` (``centered=False``) or ``[-1, 1]`` (``centered=True``) up
to :data:`DATA_RANGE_TOLERANCE` = 1/128 of the range's width (1/128 in ``[0, 1]``, 1/64 in
``[-1, 1]``). Dequantized 8-bit data stay inside: ``(k + u) / 256 < 1``, and even noise added on
top of ``k / 255`` overshoots by less than 1/256 of the range. Centered data in ``[-1, 1]``
passed with ``centered=False`` (a 1-bit/dim error in the offset) and wrongly scaled data (e.g.
pixels in ``[0, 255]``) are rejected with a message naming ``centered``; data in ``[0, 1]``
passed with ``centered=True`` lie inside ``[-1, 1]`` and cannot be told apart from centered
data (the config's ``data.centered`` is the only source of truth). Traced inputs are not
checked.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoresde_jax.flow import ODE_SOLVERS, probability_flow_drift, solve_probability_flow
from scoresde_jax.samplers.common import as_score_pytree
from scoresde_jax.sde import SDE
from scoresde_jax.utils import flat_dim

__all__ = [
    "LikelihoodResult",
    "BPDResult",
    "DATA_RANGE_TOLERANCE",
    "DIVERGENCES",
    "SOLVERS",
    "bits_per_dim",
    "log_likelihood",
    "get_likelihood_fn",
    "hutchinson_probe",
    "bpd_offset",
    "check_data",
    "logp_to_bpd",
    "uniform_dequantize",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

DIVERGENCES = ("exact", "gaussian", "rademacher")
SOLVERS = ODE_SOLVERS  # the solvers of scoresde_jax.flow, by name


class LikelihoodResult(NamedTuple):
    """Per-example ``log p_eps(x)`` in nats ``(B,)``, the latent ``z = x(T)`` ``(B, *D)`` and the
    number of drift evaluations ``(B,)`` of the augmented ODE."""

    logp: jax.Array
    latent: jax.Array
    nfe: jax.Array


class BPDResult(NamedTuple):
    """Per-example bits/dim ``(B,)``, latent ``(B, *D)`` and number of drift evaluations
    ``(B,)``."""

    bpd: jax.Array
    latent: jax.Array
    nfe: jax.Array


# --------------------------------------------------------------------------------------------------
# small pure helpers
# --------------------------------------------------------------------------------------------------
def bpd_offset(centered: bool) -> float:
    """``8 - log2(scale)`` of the data transform ``x = scale * y + shift`` from ``y in [0, 1]``:
    ``8`` for data in ``[0, 1]``, ``7`` for centered data ``x = 2 y - 1 in [-1, 1]``."""
    return 8.0 - (1.0 if centered else 0.0)


def logp_to_bpd(logp: jax.Array, dim: int, *, centered: bool,
                offset: float | None = None) -> jax.Array:
    """``bpd = -logp / (D ln 2) + offset`` with ``offset = bpd_offset(centered)`` for 8-bit data
    (see the module docstring); pass ``offset=0.0`` for continuous data (no quantization)."""
    offset = bpd_offset(centered) if offset is None else offset
    return -logp / (dim * math.log(2.0)) + offset


def uniform_dequantize(x: jax.Array, rng: jax.Array, *, centered: bool) -> jax.Array:
    """Official ``uniform_dequantization``: 8-bit data ``y = k / 255`` in ``[0, 1]`` become ``(k +
    u) / 256``, ``u ~ U(0, 1)``, i.e. ``y' = (255 y + u) / 256``.  Centered data ``x = 2 y - 1`` are
    mapped to ``[0, 1]``, dequantized and mapped back (the noise is then ``2 u / 256`` wide)."""
    y = (x + 1.0) / 2.0 if centered else x
    u = jax.random.uniform(rng, x.shape, dtype=x.dtype)
    y = (255.0 * y + u) / 256.0
    return 2.0 * y - 1.0 if centered else y


DATA_RANGE_TOLERANCE = 1.0 / 128.0  # of the width of [0, 1] / [-1, 1]; see the module docstring


def check_data(x: Any, *, centered: bool | None) -> None:
    """``ValueError`` if concrete ``x`` holds NaN/inf, or (``centered`` not None) leaves
    ``[-1, 1]`` (``centered=True``) / ``[0, 1]`` (``False``) by more than
    :data:`DATA_RANGE_TOLERANCE` of the range's width. Traced or not fully addressable arrays
    are not checked."""
    if isinstance(x, jax.core.Tracer) or not getattr(x, "is_fully_addressable", True):
        return
    a = jnp.asarray(x)
    if not bool(jnp.isfinite(a).all()):
        raise ValueError("x holds NaN/inf values; the likelihood needs finite data.")
    if centered is None:
        return
    lo, hi = (-1.0, 1.0) if centered else (0.0, 1.0)
    tol = DATA_RANGE_TOLERANCE * (hi - lo)
    amin, amax = float(a.min()), float(a.max())
    if lo - tol <= amin and amax <= hi + tol:
        return
    hint = ("scale it with the data scaler of the config the model was trained with "
            "(data.centered)")
    if not centered and -1.0 - 2 * tol <= amin < -tol and amax <= 1.0 + 2 * tol:
        hint = ("these look like centered data in [-1, 1]: pass centered=True (data.centered of "
                "the model's config), or map them to [0, 1] with (x + 1) / 2")
    raise ValueError(f"x lies in [{amin:.4g}, {amax:.4g}] but centered={bool(centered)} means data "
                     f"in [{lo:g}, {hi:g}] (tolerance {tol:g}, for dequantization noise); {hint}.")


def hutchinson_probe(rng: jax.Array, shape, dtype, *, kind: str) -> jax.Array:
    """Probe ``v`` with ``E[v v^T] = I`` for the Hutchinson-Skilling trace estimator:
    ``kind="gaussian"`` (``N(0, I)``) or ``"rademacher"`` (``+-1`` with probability 1/2)."""
    if kind == "gaussian":
        return jax.random.normal(rng, shape, dtype=dtype)
    if kind == "rademacher":
        return jax.random.rademacher(rng, shape, dtype=dtype)
    raise ValueError(f"Unknown Hutchinson probe kind={kind!r}; use 'gaussian' or 'rademacher'.")


def _check_options(divergence, solver):
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is not one of {DIVERGENCES}.")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {sorted(SOLVERS)}.")


def _check_args(x, divergence, solver, rng, dequantize):
    _check_options(divergence, solver)
    if not hasattr(x, "ndim") or x.ndim < 2:
        raise ValueError(
            f"x must be a batch of shape (B, *D), got shape {getattr(x, 'shape', None)}; "
            "add a batch axis with x[None]."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"x must be floating point (data scaled to [0, 1] or [-1, 1]), got {x.dtype}."
        )
    if rng is None and (divergence != "exact" or dequantize):
        raise ValueError(
            "rng is required for Hutchinson divergences and for dequantize=True "
            "(pass rng=jax.random.key(0)); only divergence='exact' without dequantization is "
            "deterministic."
        )


# --------------------------------------------------------------------------------------------------
# the ODE
# --------------------------------------------------------------------------------------------------
def _drift_and_divergence(drift_fn, x, probe, divergence: str):
    """Drift ``f~(x)`` and its divergence (exact trace, or ``v^T J v`` for the probe ``v``) for one
    example ``x`` of shape ``(1, *D)``."""
    if divergence == "exact":
        drift, jvp_fn = jax.linearize(drift_fn, x)
        d = x.size
        basis = jnp.eye(d, dtype=x.dtype).reshape((d,) + x.shape)
        cols = jax.vmap(jvp_fn)(basis).reshape(d, d)  # row i = J e_i (flattened)
        return drift, jnp.trace(cols)
    drift, jv = jax.jvp(drift_fn, (x,), (probe,))
    return drift, jnp.sum(probe * jv)


def _solve_one(score_fn, sde: SDE, x, probe, *, divergence, rtol, atol, eps, solver, max_steps):
    """Integrate ``(x, delta)`` for one example ``x`` of shape ``(1, *D)`` from ``eps`` to ``T``."""
    dtype = x.dtype

    def vector_field(t, state):
        # forward-time probability-flow ODE dx/dt = f~ and d delta / dt = div f~
        drift_fn = lambda y: probability_flow_drift(sde, score_fn, y, t)  # noqa: E731
        drift, div = _drift_and_divergence(drift_fn, state[0], probe, divergence)
        return drift, div.astype(dtype)

    (z, delta), nfe = solve_probability_flow(
        vector_field,
        (x, jnp.zeros((), dtype)),
        t0=jnp.asarray(eps, dtype),
        t1=jnp.asarray(sde.T, dtype),
        solver=SOLVERS[solver](),
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
    )
    return z, delta, nfe


def _log_likelihood(score_fn, sde, x, rng, *, divergence, rtol, atol, eps, solver, max_steps):
    """Traceable core of :func:`log_likelihood` (no jit, no argument checks)."""
    if divergence == "exact":
        probes = jnp.zeros_like(x)
    else:
        probes = hutchinson_probe(rng, x.shape, x.dtype, kind=divergence)

    opts = dict(divergence=divergence, rtol=rtol, atol=atol, eps=eps, solver=solver)

    def one(xi, vi):
        return _solve_one(score_fn, sde, xi[None], vi[None], max_steps=max_steps, **opts)

    z, delta, nfe = jax.vmap(one)(x, probes)
    z = z.reshape(x.shape)
    logp = sde.prior_logp(z) + delta
    return LikelihoodResult(logp, z, nfe)


def _split_rng(rng, dequantize):
    """``(probe key, dequantization key)``; fixed so that tests and users can reproduce the
    probes."""
    if rng is None:
        return None, None
    if dequantize:
        k_probe, k_deq = jax.random.split(rng)
        return k_probe, k_deq
    return rng, None


def _bits_per_dim(score_fn, sde, x, rng, *, centered, dequantize, offset=None, **options):
    k_probe, k_deq = _split_rng(rng, dequantize)
    if dequantize:
        x = uniform_dequantize(x, k_deq, centered=centered)
    res = _log_likelihood(score_fn, sde, x, k_probe, **options)
    return BPDResult(
        logp_to_bpd(res.logp, flat_dim(x.shape), centered=centered, offset=offset), res.latent,
        res.nfe
    )


_STATIC = ("sde", "divergence", "rtol", "atol", "eps", "solver", "max_steps")
_jit_log_likelihood = jax.jit(_log_likelihood, static_argnames=_STATIC)
_jit_bits_per_dim = jax.jit(
    _bits_per_dim, static_argnames=_STATIC + ("centered", "dequantize", "offset"))


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------
def log_likelihood(
    score_fn: ScoreFn, x: jax.Array, *, sde: SDE, rng: jax.Array | None = None,
    divergence: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5,
    solver: str = "tsit5", max_steps: int = 4096,
) -> LikelihoodResult:
    """Per-example ``log p_eps(x) = log p_T(z) + int_eps^T div f~(x(t), t) dt`` in nats, no offset.

    ``f~ = f - g^2 score / 2`` is the probability-flow drift; the augmented ODE is solved with
    :func:`scoresde_jax.flow.solve_probability_flow` (``solver`` a name of :data:`SOLVERS`, e.g.
    ``"tsit5"`` or ``"dopri5"``, ``PIDController(rtol, atol)``) inside ``jit``.
    ``divergence`` is ``"exact"`` (Jacobian trace, ``D`` JVPs per evaluation), ``"gaussian"`` or
    ``"rademacher"`` (Hutchinson with one fixed probe per example drawn from ``rng``).  ``x`` has
    shape ``(B, *D)``; the result follows its dtype.

    ``score_fn`` is passed to ``jit`` as a pytree, as in :mod:`scoresde_jax.samplers`: a
    ``jax.tree_util.Partial`` carries its parameters as data and compiles once per function, SDE,
    shape and options; the score of a flax network,
    ``parameterization.get_score_fn(sde, parameterization.get_model_fn(model, params))``, is such
    a pytree.  A plain callable compiles once per function object (a new lambda per call
    recompiles).  :func:`get_likelihood_fn` packages the parameters-as-data form.
    """
    _check_args(x, divergence, solver, rng, False)
    return _jit_log_likelihood(
        as_score_pytree(score_fn), sde, x, rng, divergence=divergence, rtol=rtol, atol=atol,
        eps=eps, solver=solver, max_steps=max_steps)


def bits_per_dim(
    score_fn: ScoreFn, x: jax.Array, *, sde: SDE, rng: jax.Array | None, centered: bool,
    divergence: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5, eps: float = 1e-5,
    dequantize: bool = False, solver: str = "tsit5", max_steps: int = 4096,
) -> BPDResult:
    """Per-example bits/dim ``-log p_eps(x) / (D ln 2) + offset`` of data ``x`` (shape ``(B, *D)``).

    ``centered``: the data are in ``[-1, 1]`` (``offset = 7``) rather than ``[0, 1]`` (``offset =
    8``); see the module docstring for the derivation.  ``dequantize``: first add the official
    uniform dequantization noise to 8-bit data ``k / 255`` (``(k + u) / 256`` in ``[0, 1]`` space);
    with it the mean bits/dim is a proper upper bound on the code length of the pixels and cannot be
    negative.  With ``dequantize`` the key ``rng`` is split into ``(probe key, dequantization
    key)``.  Returns ``BPDResult(bpd, latent, nfe)``; see :func:`log_likelihood` for the other
    arguments. Concrete ``x`` must be finite and inside the range ``centered`` names, up to
    :data:`DATA_RANGE_TOLERANCE` of its width (see :func:`check_data`).
    """
    _check_args(x, divergence, solver, rng, dequantize)
    check_data(x, centered=bool(centered))
    return _jit_bits_per_dim(
        as_score_pytree(score_fn), sde, x, rng, centered=bool(centered), divergence=divergence,
        rtol=rtol, atol=atol, eps=eps, dequantize=bool(dequantize), solver=solver,
        max_steps=max_steps)


def get_likelihood_fn(
    sde: SDE,
    make_score_fn: Callable[[Any], ScoreFn],
    *,
    centered: bool = False,
    divergence: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    dequantize: bool = False,
    bits: bool = True,
    solver: str = "tsit5",
    max_steps: int = 4096,
    offset: float | None = None,
) -> Callable[[Any, jax.Array, jax.Array | None], Any]:
    """A jitted ``likelihood_fn(params, x, rng)`` that takes the parameters as data (compiles once
    per shape).

    ``make_score_fn(params) -> score_fn(x, t)``; for a flax network, the adapter of
    :mod:`scoresde_jax.parameterization`::

        make_score_fn = lambda p: parameterization.get_score_fn(
            sde, parameterization.get_model_fn(model, p), continuous=True)

    Returns :class:`BPDResult` (``bits=True``, with ``centered`` / ``dequantize`` as in
    :func:`bits_per_dim`) or :class:`LikelihoodResult` in nats (``bits=False``). ``offset``
    replaces the 8-bit offset of ``centered`` (``0.0`` for continuous data).
    """
    _check_options(divergence, solver)
    opts = dict(
        divergence=divergence, rtol=rtol, atol=atol, eps=eps, solver=solver, max_steps=max_steps
    )

    @jax.jit
    def _fn(params, x, rng):
        score_fn = make_score_fn(params)
        if bits:
            return _bits_per_dim(
                score_fn, sde, x, rng, centered=bool(centered), dequantize=bool(dequantize),
                offset=offset, **opts
            )
        return _log_likelihood(score_fn, sde, x, rng, **opts)

    def likelihood_fn(params, x, rng=None):
        _check_args(x, divergence, solver, rng, dequantize and bits)
        check_data(x, centered=bool(centered) if bits and offset is None else None)
        return _fn(params, x, rng)

    likelihood_fn.jitted = _fn  # exposed for cache inspection (compile-once tests)
    return likelihood_fn
