"""bfloat16 compute with float32 parameters (``config.model.dtype = 'bfloat16'``), per architecture.

For every network the paper's config is shrunk (16x16 images, few channels) and run twice on the same
float32 parameters: in float32 and with ``model.dtype='bfloat16'``. The bf16 network must keep float32
parameters and float32 outputs, and match the float32 output and the float32 gradient of a
denoising-score-matching-shaped loss within :data:`TOLERANCE` (relative L2 error). bfloat16 keeps 8
significant bits (unit roundoff 2^-8 = 3.9e-3), compounded through tens of layers; the bounds leave
room above that. Bias gradients are sums over ``B * H * W`` positions and must be accumulated in
float32 (a bfloat16 sum of 1024 equal terms is 256): checked layer by layer by the fast bias tests. The
gradient checks are slow (one backward compile of each network in both precisions): ``-m slow``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from scoresde_jax.config import load_config
from scoresde_jax.config import create_model, dummy_inputs
from scoresde_jax.models import NoiseConditionalClassifier, layers
from scoresde_jax.models.conv import Conv, broadcast_add

# Relative L2 error bounds (output, gradient) of bf16 against f32 for each architecture.
TOLERANCE = {
    "ve/cifar10_ncsnpp_continuous": (0.03, 0.06),  # NCSN++: FIR resampling, Fourier, progressive
    "vp/cifar10_ddpmpp_continuous": (0.03, 0.06),  # DDPM++
    "vp/ddpm/cifar10": (0.03, 0.06),  # DDPM
    "ve/ncsnv2/cifar10": (0.03, 0.06),  # NCSNv2 (RefineNet, InstanceNorm++)
    "ve/ncsn/cifar10": (0.03, 0.06),  # NCSN (v1, conditional)
    "toy_8gaussians": (0.03, 0.06),  # MLP on vectors
    "classifier": (0.03, 0.06),  # noise-conditional classifier (logits)
}


def _small(name: str):
    config = load_config(f"configs/{name}.py")
    m = config.model
    if name != "toy_8gaussians":
        config.data.image_size = 16
        m.nf = 16
        if "ch_mult" in m:
            m.ch_mult, m.num_res_blocks, m.attn_resolutions = (1, 2), 1, (8,)
        if m.name == "ddpm":
            m.num_groups = 8  # GroupNorm groups must divide the 16 channels
    return config


def _models(name: str):
    if name == "classifier":
        def make(dtype):
            return NoiseConditionalClassifier(num_classes=4, nf=16, ch_mult=(1, 2), dtype=dtype)

        x = jnp.zeros((4, 16, 16, 3))
        return make(None), make(jnp.bfloat16), x, jnp.geomspace(0.01, 50.0, 4)
    config = _small(name)
    m32, m16 = create_model(config), create_model(config, dtype="bfloat16")
    x, labels = dummy_inputs(config, 4, m32)
    if labels.dtype == jnp.int32:  # time / noise-level indices
        labels = jnp.linspace(0, int(config.model.num_scales) - 1, 4).astype(jnp.int32)
    else:  # VE noise levels sigma(t)
        labels = jnp.geomspace(0.01, 50.0, 4).astype(jnp.float32)
    return m32, m16, x, labels


def _rel(a, b) -> float:
    num = sum(jnp.sum((x - y).astype(jnp.float32) ** 2) for x, y in
              zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    den = sum(jnp.sum(y.astype(jnp.float32) ** 2) for y in jax.tree.leaves(b))
    return float(jnp.sqrt(num / den))


@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_bfloat16_forward_matches_float32_within_tolerance(name):
    _check(name, grad=False)


@pytest.mark.parametrize("layer", ["Conv3x3", "Conv1x1", "Conv2d", "NIN", "Dense", "NCSNConv"])
def test_bfloat16_bias_gradient_is_summed_in_float32(layer):
    """The gradient of a bias is the cotangent summed over every other axis (``B * H * W`` terms).
    Summed in bfloat16 it stalls once the partial sum is 2^8-2^9 times a term (8192 ones sum to
    256); the layers sum it in float32: exactly 8192 here."""
    x = jnp.ones((8, 32, 32, 4), jnp.bfloat16)
    module = {"Conv3x3": lambda: layers.Conv(4, 3, dtype=jnp.bfloat16),
              "Conv1x1": lambda: layers.Conv(4, 1, dtype=jnp.bfloat16),
              "Conv2d": lambda: layers.Conv2d(4, dtype=jnp.bfloat16),
              "NIN": lambda: layers.NIN(4, dtype=jnp.bfloat16),
              "Dense": lambda: layers.Dense(4, dtype=jnp.bfloat16),
              "NCSNConv": lambda: Conv(4, dilation=2, dtype=jnp.bfloat16, fast_paths=False)}[layer]()
    params = module.init(jax.random.key(0), x)["params"]
    bias = "b" if layer == "NIN" else "bias"
    grad = jax.jit(jax.grad(lambda p: jnp.sum(module.apply({"params": p}, x)
                                              .astype(jnp.float32))))(params)
    assert grad[bias].dtype == jnp.float32
    assert jnp.array_equal(grad[bias], jnp.full((4,), 8 * 32 * 32.0)), grad[bias]


def test_bfloat16_broadcast_add_gradient_is_summed_in_float32():
    """The time embedding ``(B, 1, 1, C)`` added to ``(B, H, W, C)`` activations: its gradient sums
    ``H * W`` terms, in float32; float32 inputs keep the plain ``y + b``."""
    y = jnp.zeros((2, 32, 32, 3), jnp.bfloat16)
    t = jnp.ones((2, 1, 1, 3), jnp.bfloat16)
    g = jax.grad(lambda t: jnp.sum(broadcast_add(y, t).astype(jnp.float32)))(t)
    assert g.dtype == jnp.bfloat16 and jnp.array_equal(g, jnp.full(t.shape, 1024.0))
    y32, b = jax.random.normal(jax.random.key(0), (2, 4, 4, 3)), jnp.array([0.1, 0.2, 0.3])
    assert jnp.array_equal(broadcast_add(y32, b), y32 + b)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_bfloat16_output_and_gradient_match_float32_within_tolerance(name):
    _check(name, grad=True)


def _check(name: str, *, grad: bool) -> None:
    m32, m16, x, labels = _models(name)
    x = jax.random.normal(jax.random.key(1), x.shape)
    params = jax.jit(lambda k: m32.init({"params": k, "dropout": k}, x, labels,
                                        train=False)["params"])(jax.random.key(0))
    # Random (not zero-initialized) output layers, so that every layer shapes the output.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [
        p if p.ndim == 0 or jnp.any(p != 0) else 0.05 * jax.random.normal(k, p.shape)
        for p, k in zip(leaves, keys)])

    def loss(model, p):
        out = model.apply({"params": p}, x, labels, train=False)
        return jnp.mean(out.astype(jnp.float32) ** 2), out

    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    out_tol, grad_tol = TOLERANCE[name]
    if not grad:
        y32 = jax.jit(lambda p: loss(m32, p)[1])(params)
        y16 = jax.jit(lambda p: loss(m16, p)[1])(params)
    else:
        (_, y32), g32 = jax.jit(jax.value_and_grad(lambda p: loss(m32, p), has_aux=True))(params)
        (_, y16), g16 = jax.jit(jax.value_and_grad(lambda p: loss(m16, p), has_aux=True))(params)
        assert {leaf.dtype for leaf in jax.tree.leaves(g16)} == {jnp.dtype(jnp.float32)}
        grad_err = _rel(g16, g32)
        print(f"{name}: bf16 relative error of the gradient {grad_err:.2e}")
        assert grad_err < grad_tol, (name, grad_err)
    assert y16.dtype == jnp.float32 and y16.shape == y32.shape
    assert bool(jnp.all(jnp.isfinite(y16)))
    out_err = _rel(y16, y32)
    print(f"{name}: bf16 relative error of the output {out_err:.2e}")
    assert out_err < out_tol, (name, out_err)
