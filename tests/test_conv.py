"""``models.conv.Conv`` computes what ``flax.linen.Conv`` computes (same variables, outputs,
gradients and forward-mode tangents), on the paths it takes: 1x1 as a matmul, 3x3 stride 1 with
the 1-D kernel gradient at >= MIN_SIZE_1D (8x8) on CPU, and the plain strided convolution."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.models.conv import MIN_SIZE_1D, Conv


@pytest.mark.parametrize("k,stride,size", [(1, 1, 8), (3, 1, MIN_SIZE_1D), (3, 1, 4), (3, 2, 16)])
def test_conv_equals_flax_conv_with_gradients_and_jvp(k, stride, size):
    ours, ref = Conv(5, kernel_size=k, strides=stride), nn.Conv(5, (k, k), (stride, stride),
                                                                   padding="SAME")
    x = jax.random.normal(jax.random.key(0), (2, size, size, 4))
    v_ours, v_ref = ours.init(jax.random.key(1), x), ref.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
    variables = jax.tree.map(lambda a: a + 0.1, v_ref)  # non-zero bias too
    np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), rtol=1e-5,
                               atol=1e-5)

    def loss(m):
        return lambda v, x: jnp.sum(jnp.sin(m.apply(v, x)))

    g_ours, g_ref = (jax.grad(loss(m), argnums=(0, 1))(variables, x) for m in (ours, ref))
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))
    dx = jax.random.normal(jax.random.key(2), x.shape)
    t_ours, t_ref = (jax.jvp(lambda y: m.apply(variables, y), (x,), (dx,))[1] for m in (ours, ref))
    np.testing.assert_allclose(t_ours, t_ref, rtol=1e-5, atol=1e-5)
