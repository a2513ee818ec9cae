"""Tests of the score networks: official parameter counts, every NCSN++ option, dtype, remat."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from scoresde_jax.config import load_config
from scoresde_jax.config import create_model, init_model, param_shapes
from scoresde_jax.models import DDPM, NCSNpp, NCSNv2, NoiseConditionalClassifier, count_params
from scoresde_jax.models import up_down

# Parameter counts of the official score_sde code at input (1, H, W, C) (issue 4).
OFFICIAL_COUNTS = {
    "ve/cifar10_ncsnpp_continuous": 62_758_915,
    "ve/cifar10_ncsnpp_deep_continuous": 107_587_075,
    "vp/cifar10_ddpmpp_continuous": 61_804_419,
    "vp/cifar10_ddpmpp_deep_continuous": 106_632_579,
    "vp/ddpm/cifar10_continuous": 35_218_947,
    "ve/ncsnv2/cifar10": 33_970_563,
    "ve/celebahq_256_ncsnpp_continuous": 65_574_549,
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_parameter_counts_equal_official(name):
    config = load_config(f"configs/{name}.py")
    assert count_params(param_shapes(config)) == OFFICIAL_COUNTS[name]


def test_official_parameter_names():
    config = load_config("configs/ve/cifar10_ncsnpp_continuous.py")
    p = param_shapes(config)
    assert p["GaussianFourierProjection_0"]["W"].shape == (128,)
    assert set(p["AttnBlockpp_0"]) == {"GroupNorm_0", "NIN_0", "NIN_1", "NIN_2", "NIN_3"}
    assert set(p["AttnBlockpp_0"]["NIN_0"]) == {"W", "b"}
    assert set(p["Downsample_0"]["Conv2d_0"]) == {"weight", "bias"}
    assert p["ResnetBlockBigGANpp_0"]["Conv_0"]["kernel"].shape == (3, 3, 128, 128)
    # remat keeps the names (so checkpoints convert either way).
    p2 = param_shapes(config, remat=True)
    assert jax.tree.structure(p) == jax.tree.structure(p2)


# --------------------------------------------------------------------------- tiny NCSN++ options

def tiny_ncsnpp(**kw) -> NCSNpp:
    base = dict(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.1,
                fir=True, sigma_min=0.01, sigma_max=50.0, num_scales=10)
    base.update(kw)
    return NCSNpp(**base)


def labels_for(model, b=2):
    if getattr(model, "embedding_type", "positional") == "fourier":
        return jnp.linspace(0.05, 20.0, b)
    return jnp.arange(b, dtype=jnp.int32) * 3


def fake_params(model, x, labels, seed=0):
    """Random parameters of the right shapes without compiling the initializers (fast on CPU)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, labels))["params"]
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = str(path[-1].key)
        if name in ("scale", "gamma", "alpha"):
            return jnp.ones(s.shape, s.dtype) + 0.1 * rng.normal(size=s.shape).astype(s.dtype)
        fan_in = int(np.prod(s.shape[:-1])) if len(s.shape) >= 2 else 10
        return jnp.asarray(rng.normal(size=s.shape) / np.sqrt(fan_in), s.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def run(model, x, labels=None, params=None):
    labels = labels_for(model, x.shape[0]) if labels is None else labels
    if params is None:
        params = fake_params(model, x, labels)
    return params, model.apply({"params": params}, x, labels, train=False)


X8 = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))

# progressive_combine only acts with progressive_input='input_skip'.
_INPUTS = [("none", "sum"), ("input_skip", "sum"), ("input_skip", "cat"), ("residual", "sum")]
_BODY = list(itertools.product(("ddpm", "biggan"), ("none", "output_skip", "residual"), _INPUTS))
# Fast set: every (resblock, progressive, progressive_input, combine), embeddings alternating.
FAST = [(rb, pr, pi, pc, ("fourier", "positional")[i % 2])
        for i, (rb, pr, (pi, pc)) in enumerate(_BODY)]
# Slow set: the full cross product resblock x progressive x progressive_input x combine x embedding.
FULL = list(itertools.product(("ddpm", "biggan"), ("none", "output_skip", "residual"),
                              ("none", "input_skip", "residual"), ("sum", "cat"),
                              ("fourier", "positional")))


def _check_option_combo(rb, pr, pi, pc, emb, fir=True):
    model = tiny_ncsnpp(resblock_type=rb, progressive=pr, progressive_input=pi,
                        progressive_combine=pc, embedding_type=emb, fir=fir)
    _, y = run(model, X8)
    assert y.shape == X8.shape and y.dtype == X8.dtype
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("rb,pr,pi,pc,emb", FAST)
def test_ncsnpp_option_combinations(rb, pr, pi, pc, emb):
    _check_option_combo(rb, pr, pi, pc, emb, fir=(len(rb) + len(pr)) % 2 == 0)


@pytest.mark.slow
@pytest.mark.parametrize("rb,pr,pi,pc,emb", FULL)
@pytest.mark.parametrize("fir", [True, False])
def test_ncsnpp_all_option_combinations(rb, pr, pi, pc, emb, fir):
    _check_option_combo(rb, pr, pi, pc, emb, fir)


def test_ncsnpp_unconditional_and_init_scale():
    model = tiny_ncsnpp(conditional=False, init_scale=1.0, skip_rescale=False,
                        resamp_with_conv=False, fir=False, resblock_type="ddpm")
    params, y = run(model, X8)
    assert "Dense_0" not in params and y.shape == X8.shape


def test_scale_by_sigma_divides_by_label_sigma():
    m1 = tiny_ncsnpp(scale_by_sigma=True)
    m0 = tiny_ncsnpp(scale_by_sigma=False)
    labels = jnp.array([0.3, 7.0])
    params, y1 = run(m1, X8, labels)
    _, y0 = run(m0, X8, labels, params)
    np.testing.assert_allclose(y1 * labels[:, None, None, None], y0, rtol=1e-5, atol=1e-6)


def test_scale_by_sigma_positional_uses_geometric_sigmas():
    m1 = tiny_ncsnpp(scale_by_sigma=True, embedding_type="positional")
    m0 = tiny_ncsnpp(scale_by_sigma=False, embedding_type="positional")
    idx = jnp.array([0, 9])
    params, y1 = run(m1, X8, idx)
    _, y0 = run(m0, X8, idx, params)
    sig = np.exp(np.linspace(np.log(50.0), np.log(0.01), 10))[np.asarray(idx)]
    np.testing.assert_allclose(np.asarray(y1) * sig[:, None, None, None], y0, rtol=1e-4,
                               atol=1e-6)


def test_uncentered_input_is_mapped_to_minus_one_one():
    mu = tiny_ncsnpp(centered=False)
    mc = tiny_ncsnpp(centered=True)
    params, yu = run(mu, X8)
    _, yc = run(mc, 2 * X8 - 1, params=params)
    np.testing.assert_allclose(yu, yc, rtol=1e-5, atol=1e-6)


def test_dropout_needs_rng_and_is_active_in_training():
    model = tiny_ncsnpp(dropout=0.5)
    labels = labels_for(model)
    params, y_eval = run(model, X8, labels)
    y_tr = model.apply({"params": params}, X8, labels, train=True,
                       rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(y_eval, y_tr)
    with pytest.raises(Exception):
        model.apply({"params": params}, X8, labels, train=True)


def test_bfloat16_compute_float32_params():
    m32 = tiny_ncsnpp(dropout=0.0)
    m16 = tiny_ncsnpp(dropout=0.0, dtype=jnp.bfloat16)
    labels = labels_for(m32)
    params = fake_params(m16, X8, labels)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    # one jitted program for both (op-by-op eager compiled every primitive twice, once per dtype)
    y32, y16 = jax.jit(lambda p: (m32.apply({"params": p}, X8, labels),
                                  m16.apply({"params": p}, X8, labels)))(params)
    assert y16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y16)))
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert rel < 0.05, rel


def _remat_pair(make):
    plain, remat = make(False), make(True)
    labels = labels_for(plain)
    params = fake_params(plain, X8, labels)

    def loss(model, p):
        return jnp.sum(model.apply({"params": p}, X8, labels, train=True,
                                   rngs={"dropout": jax.random.key(5)}) ** 2)

    l0, g0 = jax.jit(jax.value_and_grad(lambda p: loss(plain, p)))(params)
    l1, g1 = jax.jit(jax.value_and_grad(lambda p: loss(remat, p)))(params)
    np.testing.assert_allclose(l0, l1, rtol=1e-6)
    # one global scale: some leaves (the key biases of attention) have exactly zero gradient in
    # exact arithmetic, so per-leaf relative errors would compare rounding noise
    scale = max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g0))
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a / scale, b / scale, atol=1e-5)
    return g0


def test_remat_same_output_and_grads_ncsnpp():
    g = _remat_pair(
        lambda r: tiny_ncsnpp(remat=r, dropout=0.2, ch_mult=(1,), attn_resolutions=(8,)))
    # the Gaussian Fourier features are fixed (stop_gradient), as in the official code
    assert float(jnp.abs(g["GaussianFourierProjection_0"]["W"]).max()) == 0.0
    assert float(jnp.abs(g["Dense_0"]["kernel"]).max()) > 0.0


def test_remat_same_output_and_grads_ddpm():
    _remat_pair(lambda r: DDPM(nf=16, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,),
                               num_groups=4, remat=r, dropout=0.2))


# ------------------------------------------------------------------------ DDPM, NCSNv2, classifier

@pytest.mark.parametrize("conditional,scale", [(True, False), (False, True)])
def test_ddpm_tiny_forward(conditional, scale):
    model = DDPM(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4,
                 conditional=conditional, scale_by_sigma=scale, num_scales=10)
    params, y = run(model, X8, jnp.array([0, 9]))
    assert y.shape == X8.shape and bool(jnp.all(jnp.isfinite(y)))
    assert ("Dense_0" in params) == conditional


@pytest.mark.parametrize("depth,size,norm", [("64", 8, "InstanceNorm++"),
                                             ("128", 16, "InstanceNorm"),
                                             ("256", 16, "VarianceNorm")])
def test_ncsnv2_tiny_forward(depth, size, norm):
    model = NCSNv2(nf=8, depth=depth, normalization=norm, num_scales=10)
    x = jax.random.uniform(jax.random.key(0), (2, size, size, 3))
    params, y = run(model, x, jnp.array([0, 9]))
    assert y.shape == x.shape and bool(jnp.all(jnp.isfinite(y)))


def test_ncsnv1_is_noise_conditional():
    model = NCSNv2(nf=8, depth="64", conditional=True, num_scales=10, scale_by_sigma=False)
    params, y = run(model, X8, jnp.array([0, 0]))
    assert params["ConditionalResidualBlock_0"]["ConditionalInstanceNorm2dPlus_0"]["Embed_0"][
        "embedding"].shape == (10, 3 * 8)
    assert "CondRefineBlock_0" in params
    _, y2 = run(model, X8, jnp.array([0, 7]), params)
    np.testing.assert_allclose(y[0], y2[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y[1], y2[1])
    remat = NCSNv2(nf=8, depth="64", conditional=True, num_scales=10, scale_by_sigma=False,
                   remat=True)
    _, y3 = run(remat, X8, jnp.array([0, 7]), params)
    np.testing.assert_allclose(y3, y2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="InstanceNorm"):
        run(NCSNv2(nf=8, conditional=True, normalization="GroupNorm", num_scales=10), X8,
            jnp.array([0, 1]))


def test_classifier_logits_and_input_gradient():
    clf = NoiseConditionalClassifier(num_classes=5, nf=16, ch_mult=(1, 2))
    sig = jnp.array([0.1, 10.0])
    params = fake_params(clf, X8, sig)
    logits = clf.apply({"params": params}, X8, sig)
    assert logits.shape == (2, 5)
    g = jax.jit(jax.grad(
        lambda x: jax.nn.log_softmax(clf.apply({"params": params}, x, sig))[:, 1].sum()))(X8)
    assert g.shape == X8.shape and bool(jnp.all(jnp.isfinite(g)))
    assert count_params(params) < 1_000_000
    clf_pos = NoiseConditionalClassifier(num_classes=3, nf=16, ch_mult=(1, 2),
                                         embedding_type="positional", remat=True)
    _, out = run(clf_pos, X8, jnp.array([0, 999]))
    assert out.shape == (2, 3)


# --------------------------------------------------------------------------- create_model

def test_create_model_reads_official_keys_and_options():
    config = load_config("configs/ve/cifar10_ncsnpp_continuous.py")
    model = create_model(config)
    assert isinstance(model, NCSNpp) and model.fir and model.progressive_input == "residual"
    assert model.embedding_type == "fourier" and model.scale_by_sigma and not model.centered
    m16 = create_model(config, dtype="bfloat16", remat=True)
    assert m16.dtype == jnp.bfloat16 and m16.remat
    config.model.dtype = "bfloat16"
    assert create_model(config).dtype == jnp.bfloat16
    assert isinstance(create_model(load_config("configs/ve/ncsnv2/bedroom.py")), NCSNv2)
    assert create_model(load_config("configs/ve/ncsnv2/bedroom.py")).depth == "128"
    assert create_model(load_config("configs/ve/ncsn/cifar10.py")).conditional


def test_create_model_errors():
    config = load_config("configs/vp/ddpm/cifar10.py")
    config.model.name = "unet9000"
    with pytest.raises(ValueError, match="unet9000"):
        create_model(config)
    config = load_config("configs/ve/cifar10_ncsnpp_continuous.py")
    config.training.continuous = False
    with pytest.raises(ValueError, match="positional"):
        create_model(config)
    with pytest.raises(ValueError, match="progressive"):
        run(tiny_ncsnpp(progressive="sideways"), X8)


def test_init_model_small_config():
    config = load_config("configs/vp/ddpm/cifar10.py")
    config.model.nf = 16
    config.model.num_groups = 4
    config.model.ch_mult = (1, 2)
    config.model.num_res_blocks = 1
    config.data.image_size = 8
    config.model.attn_resolutions = (4,)
    params = init_model(jax.random.key(0, impl="unsafe_rbg"), config, batch_size=2)
    model = create_model(config)
    y = model.apply({"params": params}, X8, jnp.array([1, 2]), train=False)
    assert y.shape == X8.shape


# --------------------------------------------------------------------------- FIR resampling

def _upfirdn_reference(x, k, up, down, pad0, pad1):
    out = np.zeros((x.shape[0], (x.shape[1] * up + pad0 + pad1 - k.shape[0]) // down + 1,
                    (x.shape[2] * up + pad0 + pad1 - k.shape[1]) // down + 1, x.shape[3]))
    for b in range(x.shape[0]):
        for c in range(x.shape[3]):
            z = np.zeros((x.shape[1] * up, x.shape[2] * up))
            z[::up, ::up] = x[b, :, :, c]
            z = np.pad(z, ((pad0, pad1), (pad0, pad1)))
            out[b, :, :, c] = scipy.signal.convolve2d(z, k, mode="valid")[::down, ::down]
    return out


@pytest.mark.parametrize("up,down,pad0,pad1", [(2, 1, 2, 1), (1, 2, 1, 1), (2, 2, 1, 3)])
def test_upfirdn_matches_scipy_definition(up, down, pad0, pad1):
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    k = up_down.setup_kernel([1, 2, 5, 1]) * 4
    k = k + np.triu(k)  # asymmetric: checks the kernel flip
    got = up_down.upfirdn_2d(jnp.asarray(x), k, up=up, down=down, pad0=pad0, pad1=pad1)
    np.testing.assert_allclose(got, _upfirdn_reference(x, k, up, down, pad0, pad1), atol=1e-5)


def test_fir_resampling_shapes_and_constants():
    ones = jnp.ones((1, 8, 8, 2))
    up = up_down.upsample_2d(ones, (1, 3, 3, 1))
    assert up.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(up[:, 2:-2, 2:-2], 1.0, rtol=1e-6)
    down = up_down.downsample_2d(ones, (1, 3, 3, 1))
    assert down.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(down[:, 1:-1, 1:-1], 1.0, rtol=1e-6)
    w = jax.random.normal(jax.random.key(0), (3, 3, 2, 5))
    assert up_down.upsample_conv_2d(ones, w, (1, 3, 3, 1)).shape == (1, 16, 16, 5)
    assert up_down.conv_downsample_2d(ones, w, (1, 3, 3, 1)).shape == (1, 4, 4, 5)


def test_upsample_conv_is_transposed_conv_then_fir():
    """The fused op equals TF-style conv2d_transpose (lax.conv_transpose) followed by the FIR."""
    x = jax.random.normal(jax.random.key(0), (1, 5, 5, 2))
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
    wt = jnp.transpose(w[::-1, ::-1], (0, 1, 3, 2))
    y = jax.lax.conv_transpose(x, wt, (2, 2), "VALID", transpose_kernel=True,
                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    k = up_down.setup_kernel((1, 3, 3, 1)) * 4
    ref = up_down.upfirdn_2d(y, k, pad0=1, pad1=1)
    np.testing.assert_allclose(up_down.upsample_conv_2d(x, w, (1, 3, 3, 1)), ref, atol=1e-5)


@pytest.mark.parametrize("up,down,pad0,pad1", [(2, 1, 2, 1), (1, 2, 1, 1), (2, 2, -1, 3)])
def test_separable_fir_path_equals_2d_kernel(up, down, pad0, pad1):
    """1-D kernels take the fast separable path (shifted slices); it equals the 2-D convolution."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    k1 = np.array([1.0, 2.0, 5.0, 1.0])
    a = up_down.upfirdn_2d(x, k1, up=up, down=down, pad0=pad0, pad1=pad1)
    b = up_down.upfirdn_2d(x, np.outer(k1, k1), up=up, down=down, pad0=pad0, pad1=pad1)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda dt: DDPM(nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4,
                    dropout=0.0, dtype=dt),
    lambda dt: NCSNv2(nf=8, depth="64", num_scales=10, dtype=dt),
    lambda dt: NoiseConditionalClassifier(num_classes=4, nf=16, ch_mult=(1, 2), dtype=dt),
], ids=["ddpm", "ncsnv2", "classifier"])
def test_bfloat16_other_models(make):
    m32, m16 = make(None), make(jnp.bfloat16)
    labels = jnp.array([1, 8]) if not isinstance(m32, NoiseConditionalClassifier) else \
        jnp.array([0.1, 5.0])
    params = fake_params(m16, X8, labels)
    y32 = m32.apply({"params": params}, X8, labels)
    y16 = m16.apply({"params": params}, X8, labels)
    assert y16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y16)))
    rel = float(jnp.linalg.norm(y16 - y32) / jnp.linalg.norm(y32))
    assert rel < 0.05, rel
