"""``models.conv.Conv`` computes what ``flax.linen.Conv`` computes (same variables, outputs,
gradients and forward-mode tangents), on the paths it takes: with ``fast_paths`` 1x1 as a matmul,
3x3 stride 1 with the 1-D kernel gradient at >= MIN_SIZE_1D (8x8) on CPU, and the plain strided
convolution; without ``fast_paths`` (NCSN/NCSNv2) one ``conv_general_dilated``, also dilated."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.models.conv import Conv
from scoresde_jax.models.cpu_conv_grad import MIN_SIZE_1D


@pytest.mark.parametrize("k,stride,size,dilation,fast", [
    (1, 1, 8, 1, True), (3, 1, MIN_SIZE_1D, 1, True), (3, 1, 4, 1, True), (3, 2, 16, 1, True),
    (3, 1, 8, 1, False), (1, 1, 8, 1, False), (3, 1, 8, 2, False), (3, 1, 8, 2, True)])
def test_conv_equals_flax_conv_with_gradients_and_jvp(k, stride, size, dilation, fast):
    ours = Conv(5, kernel_size=k, strides=stride, dilation=dilation, fast_paths=fast)
    ref = nn.Conv(5, (k, k), (stride, stride), padding="SAME", kernel_dilation=(dilation, dilation))
    rng = np.random.default_rng(0)  # NumPy inputs, eval_shape, one jit: eager op-by-op
    x, dx = rng.standard_normal((2, 2, size, size, 4), dtype=np.float32)  # compiled each op apart
    v_ours, v_ref = (jax.eval_shape(m.init, jax.random.key(1), x) for m in (ours, ref))
    assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)

    def init(s):  # as flax's init (lecun-normal kernel, zero bias) + 0.1: non-zero bias too
        if len(s.shape) == 1:
            return np.full(s.shape, 0.1, np.float32)
        return (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1])) + 0.1).astype(
            np.float32)

    variables = jax.tree.map(init, v_ref)

    def outputs(m, variables, x, dx):  # output, gradients (of v and x), forward tangent
        def loss(v, x):
            return jnp.sum(jnp.sin(m.apply(v, x)))

        return (m.apply(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x),
                jax.jvp(lambda y: m.apply(variables, y), (x,), (dx,))[1])

    (y_ours, g_ours, t_ours), (y_ref, g_ref, t_ref) = jax.jit(
        lambda *a: (outputs(ours, *a), outputs(ref, *a)))(variables, x, dx)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
    np.testing.assert_allclose(t_ours, t_ref, rtol=1e-5, atol=1e-5)
