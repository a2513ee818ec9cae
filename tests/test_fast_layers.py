"""The CPU-faster layers compute what flax's do: ``models.norm.GroupNorm`` vs ``nn.GroupNorm``
(same variables, outputs, gradients, forward-mode tangents, bfloat16 compute).

Both modules run inside one ``jax.jit`` per test case (as in the models), with NumPy inputs and
``jax.eval_shape`` for the variables: op-by-op eager dispatch compiled every primitive (and every
``jax.random`` call) apart, most of these tests' time."""

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
    rng = np.random.default_rng(0)
    x, r, dx = rng.standard_normal((3,) + shape, dtype=np.float32)
    x = 0.5 + 2 * x
    v_ours, v_ref = (jax.eval_shape(m.init, jax.random.key(1), x) for m in (ours, ref))
    assert jax.tree.map(jnp.shape, v_ours) == jax.tree.map(jnp.shape, v_ref)
    c = shape[-1]
    variables = {"params": {"scale": 1 + 0.1 * rng.standard_normal(c, dtype=np.float32),
                            "bias": 0.1 * rng.standard_normal(c, dtype=np.float32)}}

    def outputs(m, variables, x, r, dx):  # output, gradients (of v and x), forward tangent
        def loss(v, x):
            return jnp.sum(jax.nn.swish(m.apply(v, x)) * r)

        return (m.apply(variables, x), jax.grad(loss, argnums=(0, 1))(variables, x),
                jax.jvp(lambda y: m.apply(variables, y), (x,), (dx,))[1])

    got, want = jax.jit(lambda *a: (outputs(ours, *a), outputs(ref, *a)))(variables, x, r, dx)
    for g, w in zip(got, want):
        _close_tree(g, w, 1e-5)


def test_group_norm_bfloat16_and_constant_groups():
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 8), dtype=np.float32)
    x[0, :, :, :2] = 3.0  # a constant group: variance 0 (clipped), output = bias
    ours = GroupNorm(num_groups=4, dtype=jnp.bfloat16)
    ref = nn.GroupNorm(num_groups=4, epsilon=1e-6, dtype=jnp.bfloat16)
    v = {"params": {"scale": np.ones(8, np.float32), "bias": np.zeros(8, np.float32)}}  # ref.init

    @jax.jit
    def apply(v, x):
        xb = x.astype(jnp.bfloat16)
        return ours.apply(v, xb), ref.apply(v, xb), GroupNorm(num_groups=4).apply(v, x)

    y, y_ref, y32 = apply(v, x)
    assert y.dtype == y_ref.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(jnp.float32), y_ref.astype(jnp.float32), atol=2e-2)
    assert y32.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y32)))
    np.testing.assert_allclose(y32[0, :, :, :2], 0.0, atol=1e-6)
