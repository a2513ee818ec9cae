"""The CPU-faster layers compute what flax's do: ``models.norm.GroupNorm`` vs ``nn.GroupNorm``
(same variables, outputs, gradients, forward-mode tangents, bfloat16 compute)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.models.norm import GroupNorm


def _close_tree(a, b, rel):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=rel, atol=rel * float(jnp.abs(v).max()))


@pytest.mark.parametrize("shape,groups", [((2, 8, 8, 16), 4), ((3, 4, 6, 32), 32),
                                          ((2, 5, 12), 3)])
def test_group_norm_equals_flax(shape, groups):
    ours, ref = GroupNorm(num_groups=groups), nn.GroupNorm(num_groups=groups, epsilon=1e-6)
    x = 0.5 + 2 * jax.random.normal(jax.random.key(0), shape)
    v_ours, v_ref = ours.init(jax.random.key(1), x), ref.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
    k1, k2 = jax.random.split(jax.random.key(2))
    c = shape[-1]
    variables = {"params": {"scale": 1 + 0.1 * jax.random.normal(k1, (c,)),
                            "bias": 0.1 * jax.random.normal(k2, (c,))}}
    _close_tree(ours.apply(variables, x), ref.apply(variables, x), 1e-5)

    r = jax.random.normal(jax.random.key(3), shape)

    def loss(m):
        return lambda v, x: jnp.sum(jax.nn.swish(m.apply(v, x)) * r)

    g_ours, g_ref = (jax.grad(loss(m), argnums=(0, 1))(variables, x) for m in (ours, ref))
    _close_tree(g_ours, g_ref, 1e-5)
    dx = jax.random.normal(jax.random.key(4), shape)
    t_ours, t_ref = (jax.jvp(lambda y: m.apply(variables, y), (x,), (dx,))[1] for m in (ours, ref))
    _close_tree(t_ours, t_ref, 1e-5)


def test_group_norm_bfloat16_and_constant_groups():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 8))
    x = x.at[0, :, :, :2].set(3.0)  # a constant group: variance 0 (clipped), output = bias
    ours = GroupNorm(num_groups=4, dtype=jnp.bfloat16)
    ref = nn.GroupNorm(num_groups=4, epsilon=1e-6, dtype=jnp.bfloat16)
    v = ref.init(jax.random.key(1), x)
    y, y_ref = ours.apply(v, x.astype(jnp.bfloat16)), ref.apply(v, x.astype(jnp.bfloat16))
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(jnp.float32), y_ref.astype(jnp.float32), atol=2e-2)
    y32 = GroupNorm(num_groups=4).apply(v, x)
    assert y32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y32)))
    np.testing.assert_allclose(y32[0, :, :, :2], 0.0, atol=1e-6)

