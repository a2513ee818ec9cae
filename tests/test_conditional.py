"""Class-conditional generation against closed forms.

Data: a two-class Gaussian mixture ``p(x | y = k) = N(mu_k, v0 I)`` with ``p(y) = 1/2``. Under any
SDE of the library ``p_t(x | y = k) = N(a mu_k, (a^2 v0 + s^2) I)``, so the exact label score, the
exact unconditional (mixture) score and the exact ``p_t(y | x)`` are known:

* classifier-free guidance of the exact label score equals ``(1 + w) score_y - w score``, and equals
  classifier guidance with the exact classifier at scale ``1 + w`` (Bayes' rule);
* classifier guidance at scale 1 is the exact conditional score;
* sampling with ``w = 0`` gives the class's Gaussian.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic, guidance, losses, samplers
from scoresde_jax.models import DDPM, MLP, NCSNpp, NoiseConditionalClassifier, count_params
from scoresde_jax.sde import VESDE, VPSDE

MU = np.array([[2.0, 0.5], [-1.5, -1.0]])
V0 = 0.09


def _component(k):
    return analytic.gaussian(jnp.asarray(MU[k]), V0)


MIX = analytic.GaussianMixture(jnp.full((2,), 0.5), jnp.asarray(MU),
                               jnp.asarray(np.stack([V0 * np.eye(2)] * 2)), (2,))


def _exact_label_score(sde):
    scores = [analytic.exact_score_fn(_component(k), sde) for k in range(2)]
    mix = analytic.exact_score_fn(MIX, sde)

    def score_fn(x, t, y):
        out = jnp.where((y == 2)[:, None], mix(x, t), 0.0)
        for k in range(2):
            out = jnp.where((y == k)[:, None], scores[k](x, t), out)
        return out

    return score_fn


def _exact_logits(sde):
    def logits(x, t):
        return jnp.stack([analytic.marginal_logp(_component(k), sde, x, t) for k in range(2)], -1)

    return logits


def _points(n=16, seed=0):
    kx, kt = jax.random.split(jax.random.key(seed))
    return 2.0 * jax.random.normal(kx, (n, 2)), jax.random.uniform(kt, (n,), minval=0.05, maxval=1)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE(sigma_max=5.0)], ids=["vp", "ve"])
def test_classifier_free_guidance_closed_form(sde):
    x, t = _points()
    a, s = np.asarray(sde.mean_coeff(t))[:, None], np.asarray(sde.marginal_std(t))[:, None]
    var = a**2 * V0 + s**2
    xn = np.asarray(x)
    cond = [-(xn - a * MU[k]) / var for k in range(2)]
    logw = np.stack([-0.5 * np.sum((xn - a * MU[k]) ** 2, -1) / var[:, 0] for k in range(2)], -1)
    r = np.exp(logw - logw.max(-1, keepdims=True))
    r /= r.sum(-1, keepdims=True)
    uncond = r[:, :1] * cond[0] + r[:, 1:] * cond[1]
    label_score = _exact_label_score(sde)
    for y in (0, 1):
        for w in (0.0, 1.0, 4.0):
            got = guidance.classifier_free_guidance(label_score, y, w, null=2)(x, t)
            np.testing.assert_allclose(got, (1 + w) * cond[y] - w * uncond, rtol=1e-4, atol=1e-4)
    # a vector of labels
    y = jnp.arange(16) % 2
    got = guidance.classifier_free_guidance(label_score, y, 2.0, null=2)(x, t)
    want = np.where(np.asarray(y)[:, None] == 0, 3 * cond[0] - 2 * uncond, 3 * cond[1] - 2 * uncond)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_classifier_guidance_is_bayes_rule():
    sde = VPSDE()
    x, t = _points(seed=1)
    label_score = _exact_label_score(sde)
    uncond = analytic.exact_score_fn(MIX, sde)
    logits = _exact_logits(sde)
    for y in (0, 1):
        exact = guidance.label_score(label_score, y)(x, t)
        np.testing.assert_allclose(guidance.classifier_guidance(uncond, logits, y, 1.0)(x, t),
                                   exact, rtol=1e-4, atol=1e-4)
        # classifier-free guidance at w == classifier guidance at 1 + w
        for w in (1.0, 3.0):
            np.testing.assert_allclose(
                guidance.classifier_free_guidance(label_score, y, w, null=2)(x, t),
                guidance.guided_score_fn(uncond, y, guidance=1 + w, classifier_fn=logits)(x, t),
                rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["pc", "ode", "dpm_solver_pp"])
def test_guided_sampling_follows_the_class(method):
    sde = VPSDE(N=100)
    label_score = _exact_label_score(sde)
    n = 512
    opts = {"pc": dict(corrector="none"), "ode": {}, "dpm_solver_pp": dict(num_steps=20)}[method]
    for y in (0, 1):
        score = guidance.classifier_free_guidance(label_score, y, 0.0, null=2)
        x = samplers.SAMPLERS[method].fn(score, sde, (n, 2), jax.random.key(y), **opts).x
        se = np.sqrt(V0 / n)
        np.testing.assert_allclose(np.mean(x, 0), MU[y], atol=6 * se + 0.03)
        np.testing.assert_allclose(np.var(x, 0), V0, rtol=0.3)


def test_guided_pc_compiles_once_over_labels_and_scales():
    from scoresde_jax.samplers import pc as pc_module

    sde = VPSDE(N=25)
    label_score = _exact_label_score(sde)
    before = pc_module._pc_sample._cache_size()
    for y, w in ((0, 0.0), (1, 2.0), (0, 4.0)):
        score = guidance.classifier_free_guidance(label_score, y, w, null=2)
        samplers.pc_sample(score, sde, (8, 2), jax.random.key(0), corrector="none")
    assert pc_module._pc_sample._cache_size() == before + 1


# --- networks -----------------------------------------------------------------------------------

_SMALL = {
    NCSNpp: dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)),
    DDPM: dict(nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=8),
}


@pytest.mark.parametrize("cls", [NCSNpp, DDPM], ids=["ncsnpp", "ddpm"])
def test_label_embedding_adds_one_table(cls):
    # shapes by jax.eval_shape, random NumPy parameters: eager initializers compiled every
    # jax.random call apart (most of the time); applies eager, so None and 10 run the same ops
    x, t = jnp.zeros((3, 8, 8, 1)), jnp.ones((3,))
    p0 = jax.eval_shape(cls(**_SMALL[cls]).init, jax.random.key(0), x, t)["params"]
    model = cls(num_classes=10, class_dropout=0.2, **_SMALL[cls])
    p1 = jax.eval_shape(model.init, jax.random.key(0), x, t)["params"]
    assert set(p1) - set(p0) == {"class_embed"}
    width = p1["class_embed"]["embedding"].shape[-1]
    assert count_params(p1) - count_params(p0) == 11 * width
    # labels change the output; None is the null class
    rng = np.random.default_rng(2)
    p1 = jax.tree.map(lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
                                 ).astype(np.float32), p1)
    out = [model.apply({"params": p1}, x, t, class_labels=jnp.full((3,), k)) for k in (1, 4, 10)]
    assert not np.allclose(out[0], out[1])
    np.testing.assert_allclose(model.apply({"params": p1}, x, t), out[2], rtol=1e-6)


def test_class_dropout_gives_the_null_class():
    model = MLP(hidden_sizes=(16,), num_classes=3, class_dropout=0.5)
    x, t = jnp.ones((256, 2)), jnp.ones((256,))
    y = jnp.zeros((256,), jnp.int32)
    params = model.init(jax.random.key(0), x, t)["params"]
    params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(3), a.shape), params)
    drop = model.apply({"params": params}, x, t, train=True, class_labels=y,
                       rngs={"dropout": jax.random.key(1)})
    cond = model.apply({"params": params}, x, t, class_labels=y)
    null = model.apply({"params": params}, x, t)
    is_null = np.all(np.isclose(drop, null), -1)
    assert np.all(is_null | np.all(np.isclose(drop, cond), -1))
    assert 0.35 < is_null.mean() < 0.65


def test_bad_class_inputs():
    x, t = jnp.ones((4, 2)), jnp.ones((4,))
    with pytest.raises(ValueError, match="unconditional"):
        MLP(hidden_sizes=(8,)).init(jax.random.key(0), x, t, class_labels=jnp.zeros(4, int))
    with pytest.raises(ValueError, match="class_dropout"):
        MLP(hidden_sizes=(8,), num_classes=2, class_dropout=1.0).init(jax.random.key(0), x, t)
    with pytest.raises(ValueError, match="integers of shape"):
        MLP(hidden_sizes=(8,), num_classes=2).init(jax.random.key(0), x, t,
                                                   class_labels=jnp.zeros(3, int))
    with pytest.raises(ValueError, match="null_label|unconditional"):
        guidance.null_label(MLP())


# --- objectives ---------------------------------------------------------------------------------


def test_conditional_loss_uses_labels():
    sde = VPSDE()
    model = MLP(hidden_sizes=(16,), num_classes=2)
    x, y = jnp.ones((8, 2)), jnp.array([0, 1] * 4)
    params = model.init(jax.random.key(0), x, jnp.ones((8,)))["params"]
    params = jax.tree.map(lambda a: a + jax.random.normal(jax.random.key(3), a.shape), params)
    loss_fn = losses.get_loss_fn(sde, model, train=False)
    l0, _ = loss_fn(params, {"image": x, "label": y}, jax.random.key(1))
    l1, _ = loss_fn(params, {"image": x, "label": 1 - y}, jax.random.key(1))
    assert np.isfinite(l0) and not np.isclose(l0, l1)
    with pytest.raises(ValueError, match="label"):
        loss_fn(params, x, jax.random.key(1))


def test_classifier_loss_of_the_exact_classifier():
    """The exact p_t(y | x) attains the Bayes cross-entropy: lower than a wrong-way classifier,
    and near log 2 at t = 1 where the classes overlap."""
    sde = VPSDE()
    logits = _exact_logits(sde)
    n = 4096
    y = jnp.arange(n) % 2
    x0 = jnp.asarray(MU)[y] + np.sqrt(V0) * jax.random.normal(jax.random.key(0), (n, 2))
    z = jax.random.normal(jax.random.key(1), (n, 2))
    for t, bound in ((0.1, 0.05), (1.0, None)):
        tt = jnp.full((n,), t)
        ce = losses.classifier_loss(logits, x0, y, tt, z, sde=sde).mean()
        wrong = losses.classifier_loss(lambda a, b: -logits(a, b), x0, y, tt, z, sde=sde).mean()
        assert ce < wrong
        if bound is not None:
            assert ce < bound
        else:
            np.testing.assert_allclose(ce, np.log(2), atol=0.02)


def test_classifier_loss_fn_trains_a_classifier_signal():
    sde = VESDE(sigma_max=5.0)
    clf = NoiseConditionalClassifier(num_classes=2, nf=8, ch_mult=(1,), centered=True)
    x = jnp.concatenate([jnp.ones((4, 4, 4, 1)), -jnp.ones((4, 4, 4, 1))])
    batch = {"image": x, "label": jnp.array([0] * 4 + [1] * 4)}
    shapes = jax.eval_shape(clf.init, jax.random.key(0), x, jnp.ones((8,)))["params"]
    rng = np.random.default_rng(0)  # random parameters: no eager initializers to compile
    params = jax.tree.map(lambda s: (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))
                                     ).astype(np.float32), shapes)
    loss_fn = losses.get_classifier_loss_fn(sde, clf, train=True)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, jax.random.key(1))
    np.testing.assert_allclose(loss, aux.per_example.mean(), rtol=1e-6)
    assert np.isfinite(loss) and loss > 0
    assert aux.per_example.shape == (8,)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads))
    logits_fn = guidance.model_classifier_fn(sde, clf, params)
    assert logits_fn(x, jnp.full((8,), 0.5)).shape == (8, 2)


def test_model_label_score_fn_matches_the_parameterization():
    from scoresde_jax.parameterization import get_model_fn, get_score_fn

    sde = VPSDE()
    model = MLP(hidden_sizes=(16,), num_classes=3)
    x, t = jax.random.normal(jax.random.key(0), (5, 2)), jnp.linspace(0.1, 0.9, 5)
    params = model.init(jax.random.key(0), x, t)["params"]
    label_score = guidance.model_label_score_fn(sde, model, params)
    y = jnp.array([0, 1, 2, 0, 1])

    def model_fn(x_, labels):
        return model.apply({"params": params}, x_, labels, class_labels=y)

    np.testing.assert_allclose(label_score(x, t, y), get_score_fn(sde, model_fn)(x, t), rtol=1e-6)
    assert get_model_fn is not None


# --- configs ------------------------------------------------------------------------------------


def test_conditional_and_classifier_configs():
    from scoresde_jax import config as config_lib
    from scoresde_jax.config.build import is_classifier
    from scoresde_jax.jobs.generate import image_labels

    base = config_lib.load_config("configs/digits_ddpmpp.py")
    cond = config_lib.load_config("configs/digits_conditional.py")
    model = config_lib.create_model(cond)
    assert isinstance(model, NCSNpp) and model.num_classes == 10 and model.class_dropout == 0.1
    n_base = count_params(config_lib.param_shapes(base))
    n_cond = count_params(config_lib.param_shapes(cond))
    assert n_cond - n_base == 11 * 4 * int(cond.model.nf)
    c = config_lib.conditioning(cond, config_lib.setup(cond))  # config.eval's defaults
    assert (c.classes, c.guidance) == (tuple(range(10)), 2.0)
    assert config_lib.conditioning(base, config_lib.setup(base)).classes is None
    np.testing.assert_array_equal(image_labels([3, 7], range(5)), [3, 7, 3, 7, 3])
    with pytest.raises(ValueError, match="at least one class"):
        image_labels([], range(2))
    for path in ("configs/digits_classifier.py", "configs/cifar10_classifier.py"):
        c = config_lib.load_config(path)
        clf = config_lib.create_model(c)
        assert isinstance(clf, NoiseConditionalClassifier) and is_classifier(clf)
        assert clf.num_classes == 10


# --- likelihood and controllable generation with a conditional model ----------------------------


def _logpdf(x, mu, v):
    x = np.asarray(x, np.float64)
    return -0.5 * np.sum((x - mu) ** 2, -1) / v - 0.5 * x.shape[-1] * np.log(2 * np.pi * v)


def test_conditional_likelihood_is_the_class_gaussian():
    """log p(x | y) of the exact label score is the class's Gaussian log-density; the null class
    gives the mixture's (the probability-flow ODE with the exact divergence)."""
    sde = VPSDE()
    x = jnp.asarray([[2.1, 0.4], [-1.2, -1.1], [0.3, 0.0], [1.9, 0.7], [-1.6, -0.8]])
    y = jnp.array([0, 1, 2, 1, 0])
    res = guidance.conditional_log_likelihood(_exact_label_score(sde), x, y, sde=sde,
                                              divergence="exact", rtol=1e-6, atol=1e-6)
    comp = np.stack([_logpdf(x, MU[k], V0) for k in range(2)], -1)
    mix = np.log(0.5 * np.exp(comp).sum(-1))
    want = np.where(np.asarray(y) == 2, mix, comp[np.arange(5), np.minimum(np.asarray(y), 1)])
    np.testing.assert_allclose(res.logp, want, rtol=5e-3, atol=0.02)
    assert res.latent.shape == x.shape
    # Hutchinson probes per example: an unbiased estimate, close for this 2-D Gaussian
    hut = guidance.conditional_log_likelihood(_exact_label_score(sde), x, 0, sde=sde,
                                              rng=jax.random.key(0))
    assert np.all(np.isfinite(hut.logp)) and hut.logp.shape == (5,)


MU3 = np.array([[0.5, -0.3, 0.2], [-0.4, 0.6, -0.1]])


def _exact_label_score_3(sde):
    scores = [analytic.exact_score_fn(analytic.gaussian(jnp.asarray(MU3[k]), V0), sde)
              for k in range(2)]

    def score_fn(x, t, y):
        return jnp.where((y == 0)[:, None], scores[0](x, t), scores[1](x, t))

    return score_fn


def test_inpaint_and_colorize_follow_the_class():
    """Isotropic class Gaussians: the unknown coordinates are independent of the known ones, so
    inpainting (a known coordinate) and colorization (the gray level) with the label score at
    ``y`` give the class's marginal of the unknown part: N(mu_y, V0) and N((Q^T mu_y)_{1,2}, V0)."""
    from scoresde_jax import controllable as ctl

    sde = VESDE(sigma_max=5.0, N=300)
    n, opts = 1000, dict(predictor="reverse_diffusion", corrector="langevin", n_steps=3, snr=0.16)
    se = 4 * np.sqrt(V0 / n) + 0.03
    label_score = _exact_label_score(sde)
    data, mask = jnp.zeros((n, 2)).at[:, 1].set(0.3), jnp.asarray([0.0, 1.0])
    q = np.asarray(ctl.color_decoupling_matrix(jnp.float32), np.float64)
    for y in (0, 1):
        x = np.asarray(ctl.pc_inpaint(guidance.label_score(label_score, y), sde, data, mask,
                                      jax.random.key(y), **opts).x)
        np.testing.assert_allclose(x[:, 1], 0.3, rtol=1e-6)
        np.testing.assert_allclose(x[:, 0].mean(), MU[y, 0], atol=se)
        np.testing.assert_allclose(x[:, 0].var(), V0, rtol=0.25)
        g = float(MU3[y].mean())
        rgb = np.asarray(ctl.pc_colorize(guidance.label_score(_exact_label_score_3(sde), y), sde,
                                         jnp.full((n, 1), g), jax.random.key(5 + y), **opts).x)
        np.testing.assert_allclose(rgb.mean(-1), g, atol=1e-5)
        np.testing.assert_allclose((rgb @ q[:, 1:]).mean(0), (MU3[y] @ q)[1:], atol=se)
        np.testing.assert_allclose((rgb @ q[:, 1:]).var(0), V0, rtol=0.25)


def test_controllable_with_a_tiny_conditional_network():
    """Inpainting and colorization take the guided score of a conditional flax network
    (labels and the guidance scale as data): the known part stays, the labels matter."""
    from scoresde_jax import controllable as ctl
    from scoresde_jax.sde import subVPSDE

    sde = subVPSDE(N=10)
    model = MLP(hidden_sizes=(16,), num_classes=3)
    x = jax.random.uniform(jax.random.key(0), (4, 3), minval=-1, maxval=1)
    params = model.init(jax.random.key(0), x, jnp.ones((4,)))["params"]
    params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(2), a.shape),
                          params)
    mask = jnp.asarray([1.0, 0.0, 1.0])
    outs = []
    for y in (jnp.array([0, 1, 0, 1]), jnp.array([2, 2, 2, 2])):
        score = guidance.model_score_fn(sde, model, params, labels=y, guidance=1.0)
        inp = np.asarray(ctl.pc_inpaint(score, sde, x, mask, jax.random.key(1)).x)
        np.testing.assert_allclose(inp[:, [0, 2]], np.asarray(x)[:, [0, 2]], atol=1e-6)
        col = np.asarray(ctl.pc_colorize(score, sde, x.mean(-1, keepdims=True),
                                         jax.random.key(1)).x)
        np.testing.assert_allclose(col.mean(-1), np.asarray(x).mean(-1), atol=1e-5)
        assert np.all(np.isfinite(inp)) and np.all(np.isfinite(col))
        outs.append(inp)
    assert not np.allclose(outs[0], outs[1])
