"""Controllable generation against closed forms (Gaussian data with the exact score of
scoresde_jax.analytic).

* Class-conditional sampling with the exact time-dependent classifier ``p_t(y | x)`` of a
  two-component mixture is exact (Bayes' rule), so samples for ``y = k`` must follow component
  ``k``.
* Inpainting / colorization by replacement (the official method) is an approximation.  Two checks:
  1. Predictor-only: for Gaussian data the sampler is a linear-Gaussian recursion whose output mean
     and covariance we propagate exactly in numpy, step by step (:func:`_replacement_moments`); the
     samples must match it.  This checks the implementation (order of steps, times, replacement
     noise, denoising) to statistical precision.  It also shows the method's bias: the predicted
     conditional mean is far from the exact (Schur-complement) one.
  2. With Langevin corrector steps (VE, 3 per level) the samples reproduce the exact conditional
     Gaussian ``N(mu_u + S_uk S_kk^-1 (d - mu_k), S_uu - S_uk S_kk^-1 S_ku)`` within statistical
     tolerance.
Statistical tolerances: with n samples the sample mean has standard error ``sqrt(diag(C) / n)`` and
a sample covariance entry ``sqrt((C_ii C_jj + C_ij^2) / n)``; we allow 4 standard errors plus a
small absolute margin for the time discretization.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic, guidance
from scoresde_jax import controllable as ctl
from scoresde_jax import sde as sde_lib


def _cov_4d():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    return a @ a.T / 4 + 0.3 * np.eye(4), rng.normal(size=4)


def _schur(cov, mu, known, unknown, d):
    s_uk = cov[np.ix_(unknown, known)]
    gain = s_uk @ np.linalg.inv(cov[np.ix_(known, known)])
    return mu[unknown] + gain @ (d - mu[known]), cov[np.ix_(unknown, unknown)] - gain @ s_uk.T


def _assert_moments(samples, mean, cov, *, margin=0.02, n_se=4.0):
    n = samples.shape[0]
    m_hat = samples.mean(0)
    c_hat = np.cov(samples.T).reshape(cov.shape)
    se_m = np.sqrt(np.diag(cov) / n)
    se_c = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(m_hat - mean) < n_se * se_m + margin), (m_hat, mean, se_m)
    assert np.all(np.abs(c_hat - cov) < n_se * se_c + margin), (c_hat, cov, se_c)


def _replacement_moments(sde, cov, mu, known, unknown, d, eps):
    """Exact mean / covariance of the unknown part returned by predictor-only (reverse diffusion)
    replacement sampling with the exact score, for data N(mu, cov) in the working coordinates.

    Step i at t_i: x_u <- (2 - m_i) x_u + G_i^2 score_u(x) + G_i z, score = -P_t (x - a_t mu), with
    the known part x_k = a(t_{i-1}) d + s(t_{i-1}) xi replaced (fresh xi) after the previous step
    (t_{-1} = T); the last step returns the mean (no G z).  (m_i, G_i) come from sde.discretize,
    a_t, s_t from the SDE: the code's inputs.
    """
    n_lev = sde.N
    ts = np.linspace(sde.T, eps, n_lev)
    tj = jnp.asarray(ts, jnp.float32)
    f_one, g = sde.discretize(jnp.ones(n_lev, jnp.float32), tj)
    m = 1.0 + np.asarray(f_one, np.float64)
    g = np.asarray(g, np.float64)
    a = np.asarray(sde.mean_coeff(tj), np.float64)
    s = np.asarray(sde.marginal_std(tj), np.float64)
    dim = cov.shape[0]
    mean = np.zeros(len(unknown))
    var = sde.prior_std**2 * np.eye(len(unknown))
    for i in range(n_lev):
        prev = max(i - 1, 0)
        prec = np.linalg.inv(a[i] ** 2 * cov + s[i] ** 2 * np.eye(dim))
        p_uu, p_uk = prec[np.ix_(unknown, unknown)], prec[np.ix_(unknown, known)]
        lin_u = (2 - m[i]) * np.eye(len(unknown)) - g[i] ** 2 * p_uu
        lin_k = -(g[i] ** 2) * p_uk
        const = g[i] ** 2 * a[i] * (p_uu @ mu[unknown] + p_uk @ mu[known])
        mean = lin_u @ mean + lin_k @ (a[prev] * d) + const
        var = lin_u @ var @ lin_u.T + s[prev] ** 2 * lin_k @ lin_k.T
        if i < n_lev - 1:
            var = var + g[i] ** 2 * np.eye(len(unknown))
    return mean, var


# --------------------------------------------------------------------------------------------------
# inpainting
# --------------------------------------------------------------------------------------------------
def test_inpaint_predictor_only_matches_exact_recursion():
    sde = sde_lib.VPSDE(N=300)
    cov, mu = _cov_4d()
    known, unknown, d = [0, 1], [2, 3], np.array([0.5, -1.0])
    mix = analytic.gaussian(jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32))
    n = 2000
    data = jnp.zeros((n, 4), jnp.float32).at[:, :2].set(jnp.asarray(d, jnp.float32))
    mask = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    res = ctl.pc_inpaint(
        analytic.exact_score_fn(mix, sde),
        sde,
        data,
        mask,
        jax.random.key(0),
        predictor="reverse_diffusion",
        corrector="none",
        eps=1e-3,
    )
    x = np.asarray(res.x)
    assert res.x.shape == (n, 4) and res.x.dtype == jnp.float32 and int(res.nfe) == 300
    np.testing.assert_array_equal(x[:, :2], np.broadcast_to(d.astype(np.float32), (n, 2)))
    mean, var = _replacement_moments(sde, cov, mu, known, unknown, d, 1e-3)
    _assert_moments(x[:, 2:], mean, var, margin=0.01)
    # The replacement method is biased without correction: here the mean is off by ~0.4 in one
    # coordinate (the exact conditional mean is exact_mean below).
    exact_mean, _ = _schur(cov, mu, known, unknown, d)
    assert np.max(np.abs(mean - exact_mean)) > 0.2


def test_inpaint_with_langevin_reproduces_conditional_gaussian():
    sde = sde_lib.VESDE(N=300)
    cov, mu = _cov_4d()
    known, unknown, d = [0, 1], [2, 3], np.array([0.5, -1.0])
    mix = analytic.gaussian(jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32))
    n = 2000
    data = jnp.zeros((n, 4), jnp.float32).at[:, :2].set(jnp.asarray(d, jnp.float32))
    mask = jnp.asarray([1.0, 1.0, 0.0, 0.0])
    res = ctl.pc_inpaint(
        analytic.exact_score_fn(mix, sde),
        sde,
        data,
        mask,
        jax.random.key(1),
        predictor="reverse_diffusion",
        corrector="langevin",
        n_steps=3,
        snr=0.16,
        eps=1e-5,
    )
    x = np.asarray(res.x)
    assert int(res.nfe) == 300 * 4
    np.testing.assert_array_equal(x[:, :2], np.broadcast_to(d.astype(np.float32), (n, 2)))
    mean, var = _schur(cov, mu, known, unknown, d)
    _assert_moments(x[:, 2:], mean, var, margin=0.03)


# --------------------------------------------------------------------------------------------------
# colorization
# --------------------------------------------------------------------------------------------------
def test_color_decoupling_matrix():
    q = np.asarray(ctl.color_decoupling_matrix(jnp.float32))
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(q[:, 0], np.ones(3) / math.sqrt(3), atol=1e-7)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), jnp.float32)
    y = ctl.decouple_colors(x)
    np.testing.assert_allclose(
        np.asarray(y[..., 0]), np.asarray(x.mean(-1)) * math.sqrt(3), atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(ctl.couple_colors(y)), np.asarray(x), atol=1e-5)


def test_colorize_reproduces_conditional_gaussian():
    """Pixels (R, G, B) ~ N(mu, S); given the gray level g = mean(R, G, B) the two chroma
    coordinates (x Q)_{1,2} are Gaussian with the Schur complement of S_y = Q^T S Q on the gray
    coordinate."""
    sde = sde_lib.VESDE(N=300)
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T / 3 + 0.2 * np.eye(3)
    mu = np.array([0.3, -0.2, 0.5])
    mix = analytic.gaussian(jnp.asarray(mu, jnp.float32), jnp.asarray(cov, jnp.float32))
    n = 2000
    g = 0.4
    gray = jnp.full((n, 1), g, jnp.float32)  # event shape (3,): one pixel with three channels
    res = ctl.pc_colorize(
        analytic.exact_score_fn(mix, sde),
        sde,
        gray,
        jax.random.key(3),
        predictor="reverse_diffusion",
        corrector="langevin",
        n_steps=3,
        eps=1e-5,
    )
    x = np.asarray(res.x)
    assert x.shape == (n, 3)
    np.testing.assert_allclose(x.mean(-1), g, atol=1e-6)  # the gray level is the given one
    q = np.asarray(ctl.color_decoupling_matrix(jnp.float32), np.float64)
    cov_y, mu_y = q.T @ cov @ q, q.T @ mu
    mean, var = _schur(cov_y, mu_y, [0], [1, 2], np.array([math.sqrt(3) * g]))
    _assert_moments(x @ q[:, 1:], mean, var, margin=0.03)
    # the official 3-channel input (gray repeated) gives the same samples
    res3 = ctl.pc_colorize(
        analytic.exact_score_fn(mix, sde),
        sde,
        jnp.broadcast_to(gray, (n, 3)),
        jax.random.key(3),
        predictor="reverse_diffusion",
        corrector="langevin",
        n_steps=3,
        eps=1e-5,
    )
    np.testing.assert_allclose(np.asarray(res3.x), x, atol=1e-5)


# N = 50: with N = 20 the DDPM chain of VP reaches beta_i = beta_max / N = 1, where ancestral
# sampling divides by 0 VE and VP are also covered by the statistical tests above; sub-VP (where the
# official code crashes) runs always.
@pytest.mark.parametrize(
    "sde",
    [
        pytest.param(sde_lib.VPSDE(N=50), marks=pytest.mark.slow),
        sde_lib.subVPSDE(N=50),
        pytest.param(sde_lib.VESDE(N=50), marks=pytest.mark.slow),
    ],
    ids=["vp", "subvp", "ve"],
)
def test_inpaint_and_colorize_run_for_every_sde(sde, x64):
    """Shapes, dtype (float64 here), finiteness and the known part for each SDE and each
    predictor."""
    mix = analytic.gaussian(jnp.zeros((2, 2, 3), jnp.float64), jnp.asarray(0.5, jnp.float64))
    score_fn = analytic.exact_score_fn(mix, sde)
    data = jnp.asarray(np.random.default_rng(0).normal(size=(4, 2, 2, 3)))
    mask = jnp.zeros((2, 2, 3)).at[0].set(1.0)
    res = ctl.pc_inpaint(
        score_fn, sde, data, mask, jax.random.key(0), predictor="ancestral_sampling"
    )
    assert (
        res.x.shape == data.shape
        and res.x.dtype == jnp.float64
        and bool(jnp.all(jnp.isfinite(res.x)))
    )
    np.testing.assert_array_equal(np.asarray(res.x[:, 0]), np.asarray(data[:, 0]))
    gray = data.mean(-1, keepdims=True)
    res = ctl.pc_colorize(score_fn, sde, gray, jax.random.key(1), predictor="euler_maruyama")
    assert (
        res.x.shape == data.shape
        and res.x.dtype == jnp.float64
        and bool(jnp.all(jnp.isfinite(res.x)))
    )
    np.testing.assert_allclose(
        np.asarray(res.x.mean(-1, keepdims=True)), np.asarray(gray), atol=1e-12
    )


# --------------------------------------------------------------------------------------------------
# class-conditional sampling
# --------------------------------------------------------------------------------------------------
def _two_class_mixture():
    means = jnp.asarray([[-1.5, 0.5], [1.5, -0.5]], jnp.float32)
    covs = jnp.asarray([[[0.3, 0.1], [0.1, 0.2]], [[0.2, -0.05], [-0.05, 0.4]]], jnp.float32)
    weights = jnp.asarray([0.7, 0.3], jnp.float32)
    return analytic.GaussianMixture(weights, means, covs, (2,))


def _exact_classifier(mix, sde):
    """logits_k(x, t) = log w_k + log N(x; a mu_k, a^2 S_k + s^2 I): log_softmax of it is the exact
    p_t(k | x)."""
    comps = [analytic.gaussian(mix.means[k], mix.covs[k]) for k in range(mix.weights.shape[0])]

    def classifier_fn(x, t):
        return jnp.stack(
            [
                jnp.log(mix.weights[k]) + analytic.marginal_logp(c, sde, x, t)
                for k, c in enumerate(comps)
            ],
            axis=-1,
        )

    return classifier_fn


def test_conditional_score_is_component_score():
    sde = sde_lib.VPSDE()
    mix = _two_class_mixture()
    x = analytic.sample_mixture(mix, jax.random.key(0), 8)
    t = jnp.full((8,), 0.3)
    cond = guidance.classifier_guidance(
        analytic.exact_score_fn(mix, sde), _exact_classifier(mix, sde), 1
    )
    comp = analytic.gaussian(mix.means[1], mix.covs[1])
    np.testing.assert_allclose(
        np.asarray(cond(x, t)),
        np.asarray(analytic.exact_score_fn(comp, sde)(x, t)),
        rtol=1e-4,
        atol=1e-4,
    )
    # the logp-gradient form gives the same thing
    clf = _exact_classifier(mix, sde)

    def grad_fn(x_, t_, y_):
        return guidance.classifier_logp_grad(clf, x_, t_, y_)

    cond2 = guidance.classifier_guidance(
        analytic.exact_score_fn(mix, sde), y=1, classifier_logp_grad_fn=grad_fn
    )
    np.testing.assert_allclose(
        np.asarray(cond2(x, t)), np.asarray(cond(x, t)), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="exactly one"):
        guidance.classifier_guidance(analytic.exact_score_fn(mix, sde), None, 1)


def test_class_conditional_sampling_reproduces_component():
    sde = sde_lib.VPSDE(N=300)
    mix = _two_class_mixture()
    traces = []
    clf = _exact_classifier(mix, sde)

    def classifier_fn(x, t):
        traces.append(1)
        return clf(x, t)

    score_fn = analytic.exact_score_fn(mix, sde)
    n = 2000
    for k in (0, 1):
        res = guidance.pc_conditional_sample(
            score_fn,
            classifier_fn,
            k,
            sde,
            (n, 2),
            jax.random.key(10 + k),
            predictor="reverse_diffusion",
            corrector="langevin",
            eps=1e-3,
        )
        _assert_moments(
            np.asarray(res.x),
            np.asarray(mix.means[k], np.float64),
            np.asarray(mix.covs[k], np.float64),
            margin=0.02,
        )
        if k == 0:
            n_traces = len(traces)
    assert len(traces) == n_traces  # the label is data: the sampler compiled once for both classes
