"""The EDM recipe against closed forms: the sigma(t) = t SDE on Gaussian data, EDM's preconditioning,
EDM's loss, every sampler and the likelihood on the EDMSDE, and a tiny `scoresde train` of digits_edm."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic, losses, samplers
from scoresde_jax import config as C
from scoresde_jax import likelihood as lk
from scoresde_jax import parameterization as param
from scoresde_jax.sde import EDMSDE, SDES
from tests.helpers import TinyScoreNet, run_job, tiny_config

SDE = EDMSDE()
MU, S0 = 0.3, 0.5  # Gaussian data N(MU, S0^2 I)


def _gaussian(d=2, dtype=jnp.float32):
    return analytic.gaussian(jnp.full((d,), MU, dtype), S0**2 * jnp.eye(d, dtype=dtype))


def test_edm_sde_schedule_closed_form():
    t = jnp.array([0.002, 0.1, 1.0, 80.0])
    x = jnp.ones((4, 3))
    mean, std = SDE.marginal_prob(x, t)
    np.testing.assert_allclose(mean, x)
    np.testing.assert_allclose(std, t)
    drift, g = SDE.sde(x, t)
    np.testing.assert_allclose(drift, 0.0)
    np.testing.assert_allclose(g, np.sqrt(2 * np.asarray(t)), rtol=1e-6)
    # d s(t)^2 / dt = g(t)^2 for f = 0 (the variance of the forward SDE)
    dvar = jax.vmap(jax.grad(lambda u: SDE.marginal_std(u) ** 2))(t)
    np.testing.assert_allclose(dvar, g**2, rtol=1e-6)
    assert SDE.T == SDE.prior_std == 80.0 and SDE.kind == "edm" and SDE.default_time_grid == "edm"
    assert SDES["edmsde"] is EDMSDE and hash(SDE) == hash(EDMSDE())
    z = jnp.ones((2, 3))
    np.testing.assert_allclose(SDE.prior_logp(z), -1.5 * math.log(2 * math.pi * 6400) - 3 / 12800,
                               rtol=1e-6)
    # the chain's variance increments add up to the marginal variance; ancestral std is the posterior
    ts = jnp.arange(1, SDE.N + 1) * SDE.T / SDE.N
    _, G = SDE.discretize(jnp.ones((SDE.N, 1)), ts)
    np.testing.assert_allclose(float(np.sum(np.asarray(G, np.float64) ** 2)), 6400.0, rtol=1e-4)
    prev = ts - SDE.T / SDE.N
    np.testing.assert_allclose(SDE.ancestral_std(ts, jnp.float32), prev * G / ts, rtol=1e-5)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        EDMSDE(sigma_min=1.0, sigma_max=0.5)


def test_gaussian_data_exact_score_and_marginals():
    mix = _gaussian(3)
    t = jnp.array([0.002, 0.5, 3.0, 80.0])
    x = jax.random.normal(jax.random.key(0), (4, 3)) * 2.0
    var = S0**2 + np.asarray(t) ** 2  # p_t = N(MU, (S0^2 + t^2) I)
    expected = -(np.asarray(x) - MU) / var[:, None]
    np.testing.assert_allclose(analytic.exact_score_fn(mix, SDE)(x, t), expected, rtol=1e-4,
                               atol=1e-6)
    logp = -1.5 * np.log(2 * np.pi * var) - np.sum((np.asarray(x) - MU) ** 2, -1) / (2 * var)
    np.testing.assert_allclose(analytic.marginal_logp(mix, SDE, x, t), logp, rtol=1e-5)


def test_edm_preconditioning_closed_form():
    sigma = jnp.array([0.002, 0.5, 2.0, 80.0])
    c_skip, c_out, c_in, c_noise = param.edm_coefficients(sigma, 0.5)
    s = np.asarray(sigma, np.float64)
    np.testing.assert_allclose(c_skip, 0.25 / (s**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_out, s * 0.5 / np.sqrt(s**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_in, 1 / np.sqrt(s**2 + 0.25), rtol=1e-6)
    np.testing.assert_allclose(c_noise, np.log(s) / 4, rtol=1e-6)
    x = jax.random.normal(jax.random.key(1), (4, 4, 4, 1))
    b = (slice(None), None, None, None)
    # a zero raw network is D = c_skip x: score = (c_skip x - x) / sigma^2
    score = param.get_score_fn(SDE, lambda x_in, labels: jnp.zeros_like(x_in))(x, sigma)
    np.testing.assert_allclose(x + (s**2)[b] * score, c_skip[b] * x, rtol=1e-4, atol=1e-6)
    # the network sees c_in x and the label log(sigma) / 4
    seen = {}

    def probe(x_in, labels):
        seen["x"], seen["labels"] = x_in, labels
        return x_in

    score = param.get_score_fn(SDE, probe)(x, sigma)
    np.testing.assert_allclose(seen["x"], c_in[b] * x, rtol=1e-6)
    np.testing.assert_allclose(seen["labels"], c_noise, rtol=1e-6)
    np.testing.assert_allclose(x + (s**2)[b] * score, (c_skip + c_out * c_in)[b] * x,
                               rtol=1e-4, atol=1e-5)
    # output <-> score round trip; EDM needs the state
    out = param.score_to_output(SDE, score, sigma, x=x)
    np.testing.assert_allclose(param.output_to_score(SDE, out, sigma, x=x), score, rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="needs the state x"):
        param.output_to_score(SDE, out, sigma)


def test_edm_loss_closed_form():
    d, n = 4, 20000
    mix = _gaussian(d)
    score = analytic.exact_score_fn(mix, SDE)
    k_x, k_s, k_z = jax.random.split(jax.random.key(2), 3)
    x = MU + S0 * jax.random.normal(k_x, (n, d))
    sigma = jnp.exp(-1.2 + 1.2 * jax.random.normal(k_s, (n,)))
    z = jax.random.normal(k_z, (n, d))
    loss = losses.edm_loss(score, x, sigma, z, sde=SDE, reduce_mean=True)
    # pointwise: D* - x = (S0^2 sigma z - sigma^2 (x - MU)) / (S0^2 + sigma^2)
    s = np.asarray(sigma, np.float64)[:, None]
    err = (S0**2 * s * np.asarray(z) - s**2 * (np.asarray(x) - MU)) / (S0**2 + s**2)
    weight = (s[:, 0] ** 2 + 0.25) / (s[:, 0] * 0.5) ** 2
    np.testing.assert_allclose(loss, weight * np.mean(err**2, -1), rtol=2e-3, atol=1e-5)
    # in expectation: lambda(sigma) S0^2 sigma^2 / (S0^2 + sigma^2) = 1 when S0 = sigma_data
    assert abs(float(jnp.mean(loss)) - 1.0) < 0.03
    # the key-drawn loss and reduce_mean=False (0.5 * sum) agree with it in expectation
    drawn = losses.edm_loss_from_key(score, x, jax.random.key(3), sde=SDE)
    assert abs(float(jnp.mean(drawn)) - 0.5 * d) < 0.1
    with pytest.raises(TypeError, match="EDMSDE"):
        losses.edm_loss(score, x, sigma, z, sde=SDES["vesde"]())


def test_get_loss_fn_picks_edm_loss():
    def model(variables, x, labels, train=False, rngs=None):
        return jnp.zeros_like(x)

    x = jnp.ones((8, 2))
    loss, aux = losses.get_loss_fn(SDE, model, train=False)({}, x, jax.random.key(0))
    # zero raw network: D = c_skip x, lambda ||D - x||^2 = (sigma^2 + sd^2)/(sigma sd)^2 * (sigma^2 /
    # (sigma^2 + sd^2))^2 ||x + sigma z||^2 ... finite, positive and not the DSM loss at t ~ U(eps, 80)
    assert np.isfinite(float(loss)) and aux.per_example.shape == (8,)
    with pytest.raises(ValueError, match="needs the EDMSDE"):
        losses.get_loss_fn(SDES["vesde"](), model, train=False, loss="edm")
    with pytest.raises(ValueError, match="Unknown loss"):
        losses.get_loss_fn(SDE, model, train=False, loss="l2")


# PC walks linspace(T, eps, N), uniform in sigma = t: it needs many steps near sigma = 0
NFE = {"pc": 2000, "adaptive_sde": None, "ode": None, "edm": 79}


@pytest.mark.parametrize("method", [m if m in ("heun", "unipc") else pytest.param(m, marks=pytest.mark.slow)
                                    for m in sorted(samplers.SAMPLERS)])
def test_every_sampler_on_the_edm_sde(method):
    mix = _gaussian(2)
    nfe = NFE.get(method, 35)
    res = samplers.sample(analytic.exact_score_fn(mix, SDE), SDE, (4000, 2), jax.random.key(4),
                          method=method, nfe=nfe, eps=SDE.sigma_min)
    x = np.asarray(res.x)
    np.testing.assert_allclose(x.mean(0), MU, atol=0.05)
    np.testing.assert_allclose(x.std(0), S0, rtol=0.08)


def test_heun_18_steps_is_35_nfe_by_default_of_edm_configs():
    cfg = C.load_config("configs/digits_edm.py")
    sde, eps = C.get_sde(cfg)
    assert isinstance(sde, EDMSDE) and eps == 0.002
    spec = C.sampler_spec(cfg)
    assert spec.method == "heun" and spec.options["num_steps"] == 18
    mix = _gaussian(2)
    res = samplers.sample(analytic.exact_score_fn(mix, sde), sde, (8, 2), jax.random.key(0),
                          method=spec.method, eps=eps, **spec.options)
    assert int(res.nfe) == 35


def test_likelihood_on_the_edm_sde(x64):
    mix = _gaussian(2, jnp.float64)
    x = analytic.sample_mixture(mix, jax.random.key(5), 8)
    res = lk.log_likelihood(analytic.exact_score_fn(mix, SDE), x, sde=SDE, divergence="exact",
                            eps=SDE.sigma_min)
    ref = analytic.marginal_logp(mix, SDE, x, SDE.sigma_min)
    # up to log prior(z) - log p_T(z): N(0, 6400) against N(MU, 6400.25) per dimension
    with_true_pt = res.logp - SDE.prior_logp(res.latent) + analytic.marginal_logp(mix, SDE,
                                                                                   res.latent, SDE.T)
    np.testing.assert_allclose(with_true_pt, ref, atol=2e-3)


def test_edm_sde_trains_through_the_train_job(tmp_path):
    cfg = tiny_config(sde="edmsde", n_iters=4)
    result = run_job("train", cfg, str(tmp_path), model=TinyScoreNet())
    assert int(result.step) == 4 and all(np.isfinite(float(v)) for v in result.metrics.values())


@pytest.mark.slow
def test_digits_edm_trains_through_the_train_job(tmp_path):
    cfg = C.load_config("configs/digits_edm.py")
    t = cfg.training
    t.n_iters, t.batch_size, t.log_freq, t.eval_freq = 3, 8, 1, 3
    t.snapshot_freq = t.snapshot_freq_for_preemption = 3
    t.snapshot_sampling = False
    cfg.model.nf, cfg.model.ch_mult, cfg.model.attn_resolutions = 8, (1, 2), ()
    cfg.optim.warmup = 1
    result = run_job("train", cfg, str(tmp_path))
    assert int(result.step) == 3


@pytest.mark.parametrize("arch,params", [("ddpmpp", 55_732_739), ("ncsnpp", 56_395_651)])
def test_edm_cifar10_configs_train_edms_own_networks(arch, params):
    """The CIFAR-10 EDM configs train EDM's SongUNet (the network ``convert --from edm`` loads) in
    EDM's configuration of the architecture; NCSN++ embeds ``c_noise`` with Fourier features."""
    from configs.edm.edm_recipe import SONG_UNET_ARCHS
    from scoresde_jax.models.song_unet import EDMSongUNet

    cfg = C.load_config(f"configs/edm/cifar10_{arch}_edm.py")
    model = C.create_model(cfg)
    assert isinstance(model, EDMSongUNet) and (model.precond, model.sde) == ("edm", "edm")
    assert {k: getattr(model, k) for k in SONG_UNET_ARCHS[arch]} == SONG_UNET_ARCHS[arch]
    assert (model.model_channels, tuple(model.channel_mult), model.num_blocks,
            tuple(model.attn_resolutions), model.dropout) == (128, (2, 2, 2), 4, (16,), 0.13)
    assert sum(math.prod(p.shape) for p in jax.tree.leaves(C.param_shapes(cfg))) == params


def test_edm_song_unet_trains_through_the_train_job(tmp_path):
    """A small EDM NCSN++ (Fourier embedding, residual input pyramid, FIR resampling, dropout)
    on digits, trained by the train job (``convert --from edm`` tests already sample it)."""
    from configs.edm.edm_recipe import use_edm_song_unet

    cfg = use_edm_song_unet(C.load_config("configs/digits_edm.py"), "ncsnpp")
    cfg.model.update(model_channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))
    t = cfg.training
    t.n_iters, t.batch_size, t.log_freq, t.eval_freq = 2, 4, 1, 0
    t.snapshot_freq = t.snapshot_freq_for_preemption = 2
    t.snapshot_sampling = False
    result = run_job("train", cfg, str(tmp_path), progress=False)
    assert int(result.step) == 2 and np.isfinite(float(result.metrics["train/loss"]))
    assert float(result.metrics["train/grad_norm"]) > 0


class _ExactEDMNet:
    """A class-conditional "network" ``apply(variables, x_in, c_noise, class_labels)`` whose EDM-
    preconditioned score is exact for data N(means[y], S0^2 I) (the null class 2: their mixture)."""

    num_classes = 2

    def __init__(self, means):
        self.means = means

    def apply(self, variables, x_in, labels, train=False, class_labels=None, rngs=None):
        sigma = jnp.exp(4.0 * labels)
        x = x_in * jnp.sqrt(sigma**2 + 0.25)[:, None]
        var = (S0**2 + sigma**2)[:, None]
        comp = [-(x - m) / var for m in self.means]
        w = jax.nn.softmax(jnp.stack([-jnp.sum((x - m) ** 2, -1) / (2 * var[:, 0])
                                      for m in self.means]), axis=0)
        mixture = w[0][:, None] * comp[0] + w[1][:, None] * comp[1]
        y = jnp.full(x.shape[0], 2, jnp.int32) if class_labels is None else class_labels
        score = jnp.where((y == 0)[:, None], comp[0], jnp.where((y == 1)[:, None], comp[1], mixture))
        return param.score_to_output(SDE, score, sigma, x=x)


def test_guidance_through_the_edm_parameterization():
    from scoresde_jax import guidance

    means = (jnp.array([-1.0, 0.0]), jnp.array([1.0, 0.5]))
    net = _ExactEDMNet(means)
    x = jax.random.normal(jax.random.key(6), (5, 2))
    t = jnp.array([0.01, 0.3, 1.0, 5.0, 60.0])
    var = (S0**2 + t**2)[:, None]
    cond = guidance.model_score_fn(SDE, net, {}, labels=1, guidance=0.0)(x, t)
    np.testing.assert_allclose(cond, -(x - means[1]) / var, rtol=1e-3, atol=1e-5)
    w = 2.0
    guided = guidance.model_score_fn(SDE, net, {}, labels=1, guidance=w)(x, t)
    uncond = guidance.model_score_fn(SDE, net, {})(x, t)
    np.testing.assert_allclose(guided, (1 + w) * cond - w * uncond, rtol=1e-3, atol=1e-4)
    # Heun (35 NFE) through the network is Heun on the exact class score; mean of the class
    run = functools.partial(samplers.sample, sde=SDE, shape=(2000, 2), rng=jax.random.key(7),
                            method="heun", nfe=35, eps=SDE.sigma_min)
    res = run(guidance.model_score_fn(SDE, net, {}, labels=1))
    exact = run(analytic.exact_score_fn(analytic.gaussian(means[1], S0**2 * jnp.eye(2)), SDE))
    np.testing.assert_allclose(res.x, exact.x, atol=1e-4)
    np.testing.assert_allclose(np.asarray(res.x).mean(0), means[1], atol=0.05)
