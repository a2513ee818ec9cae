"""Probability-flow likelihoods against closed forms.

For Gaussian data ``N(mu, Sigma)`` every marginal is ``p_t = N(a mu, a^2 Sigma + s^2 I)`` and the
probability-flow drift is linear with the x-independent Jacobian ``J(t) = U diag(0.5 d/dt log(a^2
lam_i + s^2)) U^T`` (``Sigma = U diag(lam) U^T``; this uses ``d(a^2)/dt = 2 c a^2`` and ``d(s^2)/dt
= 2 c s^2 + g^2``).  Hence, exactly,

    int_eps^T div dt = tr M,   M = U diag(m) U^T,   m_i = 0.5 log((a_T^2 lam_i + s_T^2) / (a_eps^2
    lam_i + s_eps^2)),

and a Hutchinson probe ``v`` held fixed on the trajectory gives exactly ``v^T M v``.  This lets the
tests check the Hutchinson code *per example and per probe* to ODE-solver accuracy (1e-4 bits/dim),
instead of only statistically. Its spread is known too: ``Var(v^T M v) = 2 ||M||_F^2`` (Gaussian
probes) and ``2 (||M||_F^2 - sum_i M_ii^2)`` (Rademacher), so the unbiasedness check compares the
batch mean of the error with 4 standard errors (with 64 examples and D = 4 that is ~0.1 bits/dim:
reaching 1e-3 bits/dim by averaging would need ~10^6 examples).  For isotropic data M is a multiple
of I and the Rademacher estimate is exact, so it is checked to 1e-3 per example.

``log p_eps(x) = log p_T(z) + int div`` holds with the *true* ``p_T``; the library uses the prior
instead, whose mismatch (e.g. ``z . mu / sigma_max^2`` for VE data with a nonzero mean) is not an
error of the ODE.  The tests check the transport with the true ``p_T`` and, separately, the reported
number with the prior for zero-mean data.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic
from scoresde_jax import likelihood as lk
from scoresde_jax import sde as sde_lib

SDES = {
    "ve": sde_lib.VESDE(sigma_min=0.01, sigma_max=50.0, N=1000),
    "vp": sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=1000),
    "subvp": sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=1000),
}
EPS = 1e-5
D = 4
B = 64
LN2 = math.log(2.0)


def _make_score_fn(sde, dim):
    def make(params):
        w, m, c = params
        return analytic.exact_score_fn(analytic.GaussianMixture(w, m, c, (dim,)), sde)

    return make


def _params(mix, dtype):
    return tuple(jnp.asarray(a, dtype) for a in (mix.weights, mix.means, mix.covs))


def _gaussians(dtype):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(D, D))
    cov = a @ a.T / D + 0.3 * np.eye(D)
    iso = analytic.gaussian(jnp.zeros(D, dtype), jnp.asarray(0.7, dtype))
    full = analytic.gaussian(jnp.asarray([-0.3, 0.4, 1.0, 0.0], dtype), jnp.asarray(cov, dtype))
    return {"iso": iso, "full": full}


def _transport_matrix(sde, cov):
    """``M = int_eps^T J(t) dt`` for Gaussian data with covariance ``cov`` (see the module
    docstring)."""
    lam, u = np.linalg.eigh(np.asarray(cov, np.float64))

    def coeffs(t):
        t = jnp.asarray([t], jnp.float64)
        return float(sde.mean_coeff(t)[0]) ** 2, float(sde.marginal_std(t)[0]) ** 2

    (a2_0, s2_0), (a2_1, s2_1) = coeffs(EPS), coeffs(sde.T)
    m = 0.5 * np.log((a2_1 * lam + s2_1) / (a2_0 * lam + s2_0))
    return (u * m) @ u.T


# Every SDE with the exact divergence and every Hutchinson kind with some SDE run by default (each
# case is one compilation of the likelihood); the rest of the 3 x 3 grid is marked slow.
_GRID = [(name, div) for div in ("exact", "gaussian", "rademacher") for name in SDES]
_FAST = {
    ("ve", "exact"),
    ("vp", "exact"),
    ("subvp", "exact"),
    ("ve", "gaussian"),
    ("vp", "rademacher"),
}


@pytest.mark.parametrize(
    "name,divergence",
    [c if c in _FAST else pytest.param(*c, marks=pytest.mark.slow) for c in _GRID],
)
def test_gaussian_logp_matches_closed_form(name, divergence, x64):
    sde = SDES[name]
    dtype = jnp.float64
    fn = lk.get_likelihood_fn(
        sde, _make_score_fn(sde, D), divergence=divergence, bits=False, eps=EPS
    )
    n = 32 if divergence == "exact" else B
    for i, (kind, mix) in enumerate(_gaussians(dtype).items()):
        x = analytic.sample_mixture(mix, jax.random.key(10 + i), n)
        rng = jax.random.key(100 + i)
        res = fn(_params(mix, dtype), x, rng)
        assert res.logp.shape == (n,) and res.logp.dtype == dtype and res.latent.shape == x.shape
        assert res.nfe.shape == (n,) and int(res.nfe.min()) > 1

        # 1) the integral of the divergence, per example and per probe
        mmat = _transport_matrix(sde, mix.covs[0])
        delta = np.asarray(res.logp - sde.prior_logp(res.latent))
        if divergence == "exact":
            expected = np.full(n, np.trace(mmat))
        else:
            v = np.asarray(lk.hutchinson_probe(rng, x.shape, x.dtype, kind=divergence))
            expected = np.einsum("bi,ij,bj->b", v, mmat, v)
        np.testing.assert_allclose(delta / (D * LN2), expected / (D * LN2), atol=1e-4)

        # 2) log p_eps(x) with the true p_T, against the closed form
        logp_true_t = (
            res.logp
            - sde.prior_logp(res.latent)
            + analytic.marginal_logp(mix, sde, res.latent, sde.T)
        )
        ref = analytic.marginal_logp(mix, sde, x, EPS)
        err_bpd = np.asarray(logp_true_t - ref) / (D * LN2)
        hutch_var = 0.0
        if divergence == "gaussian":
            hutch_var = 2 * np.sum(mmat**2)
        elif divergence == "rademacher":
            hutch_var = 2 * (np.sum(mmat**2) - np.sum(np.diag(mmat) ** 2))
        if hutch_var < 1e-12:  # exact divergence, or Rademacher probes on isotropic data
            assert np.max(np.abs(err_bpd)) < 1e-3, (kind, np.max(np.abs(err_bpd)))
        else:
            std_err = math.sqrt(hutch_var / n) / (D * LN2)
            assert abs(err_bpd.mean()) < 4 * std_err, (kind, err_bpd.mean(), std_err)
            # the spread of the estimate is the one of the Hutchinson estimator
            assert 0.5 < err_bpd.std() / (math.sqrt(hutch_var) / (D * LN2)) < 1.6

        if kind == "iso" and hutch_var < 1e-12:
            # zero-mean data: the prior matches p_T, so the reported value itself is the closed form
            raw = np.asarray(res.logp - ref) / (D * LN2)
            assert np.max(np.abs(raw)) < 1e-3, (kind, np.max(np.abs(raw)))

        # 3) p_eps, the density the ODE transports, is within 1e-3 bits/dim of the data density
        data_logp = analytic.mixture_logp(mix, x)
        assert np.max(np.abs(np.asarray(ref - data_logp))) / (D * LN2) < 1e-3


@pytest.mark.parametrize("name", ["ve", "vp", pytest.param("subvp", marks=pytest.mark.slow)])
def test_ring_mixture_exact_divergence(name, x64):
    sde = SDES[name]
    mix = analytic.ring_mixture(8, radius=2.0, std=0.2, dtype=jnp.float64)
    x = analytic.sample_mixture(mix, jax.random.key(5), 16)
    res = lk.log_likelihood(
        analytic.exact_score_fn(mix, sde), x, sde=sde, divergence="exact", eps=EPS
    )
    ref = analytic.marginal_logp(mix, sde, x, EPS)
    with_true_pt = (
        res.logp - sde.prior_logp(res.latent) + analytic.marginal_logp(mix, sde, res.latent, sde.T)
    )
    assert np.max(np.abs(np.asarray(with_true_pt - ref))) / (2 * LN2) < 1e-3
    # the reported value differs from it only by log prior(z) - log p_T(z), which is small for this
    # zero-mean mixture (VE: variances 2500 vs 2502 per dimension)
    assert np.max(np.abs(np.asarray(res.logp - ref))) / (2 * LN2) < 5e-3


def test_float32_follows_dtype():
    sde = SDES["vp"]
    mix = _gaussians(jnp.float32)["full"]
    x = jnp.clip(analytic.sample_mixture(mix, jax.random.key(0), 16), 0.0, 1.0)  # bpd: in [0, 1]
    assert x.dtype == jnp.float32
    res = lk.bits_per_dim(
        analytic.exact_score_fn(mix, sde),
        x,
        sde=sde,
        rng=None,
        centered=False,
        divergence="exact",
        eps=EPS,
    )
    assert res.bpd.dtype == jnp.float32 and res.latent.dtype == jnp.float32
    logp = -(res.bpd - 8.0) * D * LN2
    with_true_pt = (
        logp - sde.prior_logp(res.latent) + analytic.marginal_logp(mix, sde, res.latent, sde.T)
    )
    ref = analytic.marginal_logp(mix, sde, x, EPS)
    assert np.max(np.abs(np.asarray(with_true_pt - ref))) / (D * LN2) < 1e-3


def test_bpd_offset_centered_vs_unit_interval(x64):
    """The same pixels in [0, 1] (offset 8) and centered in [-1, 1] (offset 7) have the same
    bits/dim.

    Data ``y ~ N(mu, S)`` in [0, 1] and ``x = 2 y - 1 ~ N(2 mu - 1, 4 S)``: ``log p_Y(y) = log
    p_X(x) + D log 2``, so a sign error in the offset would show as a 2 bits/dim difference.  The
    prior/p_T mismatch (data mean 0.5 under VP: ``a(T) mu . z ~ 3e-3`` nats) is taken out with the
    true p_T as in the other tests; VP with eps = 1e-5 (``s(eps)^2 = 1e-6 << S``) keeps p_eps ~ p_0
    in both spaces.
    """
    sde = SDES["vp"]
    mu = jnp.asarray([0.4, 0.6], jnp.float64)
    cov = jnp.asarray([[0.01, 0.004], [0.004, 0.02]], jnp.float64)
    mix_y = analytic.gaussian(mu, cov)
    mix_x = analytic.gaussian(2 * mu - 1, 4 * cov)
    y = analytic.sample_mixture(mix_y, jax.random.key(0), 16)
    opts = dict(sde=sde, rng=None, divergence="exact", eps=EPS)

    def corrected_bpd(mix, data, centered):
        res = lk.bits_per_dim(analytic.exact_score_fn(mix, sde), data, centered=centered, **opts)
        mismatch = sde.prior_logp(res.latent) - analytic.marginal_logp(mix, sde, res.latent, sde.T)
        return np.asarray(res.bpd + mismatch / (2 * LN2))

    bpd_y = corrected_bpd(mix_y, y, False)
    bpd_x = corrected_bpd(mix_x, 2 * y - 1, True)
    np.testing.assert_allclose(bpd_x, bpd_y, atol=1e-3)
    # and both equal the closed form -log2 p_Y(y) / D + 8 of the [0, 1] data density
    closed = np.asarray(-analytic.mixture_logp(mix_y, y) / (2 * LN2) + 8.0)
    np.testing.assert_allclose(bpd_y, closed, atol=1e-3)
    assert lk.bpd_offset(False) == 8.0 and lk.bpd_offset(True) == 7.0


def test_dequantization_fixes_negative_bpd(x64):
    """Discrete data on the 8-bit grid and a model concentrated on the grid (VP, eps = 1e-5, s(eps)
    ~ 1e-3): the density at the grid points gives negative bits/dim; uniform dequantization (k + u)
    / 256 gives the variational bound, which cannot be negative on average, and is larger (the
    expected direction)."""
    sde = SDES["vp"]
    grid = np.asarray([[100, 160], [40, 200]], np.float64) / 255.0 * 2 - 1  # centered pixel values
    mix = analytic.GaussianMixture(
        jnp.full((2,), 0.5), jnp.asarray(grid), jnp.broadcast_to(1e-8 * jnp.eye(2), (2, 2, 2)), (2,)
    )
    comp = np.arange(64) % 2
    x = jnp.asarray(grid[comp])
    score_fn = analytic.exact_score_fn(mix, sde)
    opts = dict(sde=sde, rng=jax.random.key(0), centered=True, divergence="exact", eps=EPS)
    plain = lk.bits_per_dim(score_fn, x, dequantize=False, **opts)
    deq = lk.bits_per_dim(score_fn, x, dequantize=True, **opts)
    assert float(plain.bpd.mean()) < 0  # the failure users reported
    assert float(deq.bpd.mean()) > 0
    assert float(deq.bpd.mean()) > float(plain.bpd.mean()) + 1.0
    # dequantized data stay in their 8-bit cells: (k + u) / 256 in [k / 256, (k + 1) / 256)
    xd = lk.uniform_dequantize(x, jax.random.key(1), centered=True)
    k = np.round((np.asarray(x) + 1) / 2 * 255)
    cell = np.floor((np.asarray(xd) + 1) / 2 * 256)
    np.testing.assert_array_equal(cell, k)


def test_compiles_once_and_counts_nfe():
    sde = SDES["vp"]
    traces = []
    calls = []

    def make(params):
        traces.append(1)
        base = _make_score_fn(sde, 2)(params)

        def score_fn(x, t):
            jax.debug.callback(lambda: calls.append(1))
            return base(x, t)

        return score_fn

    fn = lk.get_likelihood_fn(sde, make, divergence="rademacher", bits=True, centered=True)
    mixes = [
        analytic.gaussian(jnp.asarray([0.1, 0.2]), jnp.asarray(0.5)),
        analytic.gaussian(jnp.asarray([-0.3, 0.0]), jnp.asarray([[0.4, 0.1], [0.1, 0.3]])),
    ]
    for i, mix in enumerate(mixes):
        x = jnp.clip(analytic.sample_mixture(mix, jax.random.key(i), 1), -1.0, 1.0)  # centered
        calls.clear()
        res = fn(_params(mix, jnp.float32), x, jax.random.key(7 + i))
        jax.block_until_ready(res)
        assert int(res.nfe[0]) == len(calls)  # nfe counts the drift evaluations of the solver
    assert len(traces) == 1 and fn.jitted._cache_size() == 1


def test_bad_arguments():
    sde = SDES["vp"]
    score_fn = analytic.exact_score_fn(analytic.gaussian(jnp.zeros(2), 1.0), sde)
    x = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="divergence"):
        lk.bits_per_dim(
            score_fn, x, sde=sde, rng=jax.random.key(0), centered=False, divergence="hutch"
        )
    with pytest.raises(ValueError, match="rng"):
        lk.bits_per_dim(score_fn, x, sde=sde, rng=None, centered=False)
    with pytest.raises(ValueError, match="batch"):
        lk.log_likelihood(score_fn, jnp.zeros(2), sde=sde, divergence="exact")
