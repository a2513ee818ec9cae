"""``Conv`` and ``Dense``: the variables and numbers of ``flax.linen.Conv`` / ``flax.linen.Dense``.

``Conv(features, kernel_size, strides, dilation)`` is ``nn.Conv(features, (k, k), (s, s), 'SAME',
kernel_dilation=(d, d))``: parameters ``kernel`` ``(k, k, in, features)`` and ``bias``. The class
is named ``Conv`` so modules get the same auto-names (``Conv_0``, ...) as with ``nn.Conv``:
official checkpoints load unchanged. How it computes is chosen by the ``fast_paths`` field:

* ``fast_paths=True`` (default; NCSN++, DDPM++, DDPM): a 1x1 stride-1 convolution runs as a matmul
  over the channel axis (``x @ kernel[0, 0]``, the same function, cheaper on XLA CPU); an odd
  square stride-1 undilated convolution runs as
  :func:`scoresde_jax.models.cpu_conv_grad.conv_same`, whose kernel gradient on CPU is computed
  from 1-D convolutions (float32 / float64, images of at least ``MIN_SIZE_1D``; float32 rounding
  differs from XLA's own gradient, ~4e-6 relative). Other convolutions as ``fast_paths=False``.
* ``fast_paths=False`` (NCSN, NCSNv2): one ``lax.conv_general_dilated`` on every backend, exactly
  as ``nn.Conv``.

``Dense`` is ``nn.Dense`` (same variables and float32 numbers) with the bias added by
:func:`broadcast_add`.

Reduced precision (bfloat16 compute, float32 parameters): every bias and every broadcast
per-image term (the time embedding added to ``(B, H, W, C)`` activations) is added by
:func:`broadcast_add`, whose gradient sums the cotangent over the broadcast axes in float32. The
plain ``y + b`` of bfloat16 arrays transposes to a bfloat16 sum over ``B * H * W`` terms, which
stalls once the partial sum is 2^8-2^9 times a term (1024 equal terms sum to 256).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models.cpu_conv_grad import conv_same

_DN = ("NHWC", "HWIO", "NHWC")


def broadcast_add(y: jax.Array, b: jax.Array) -> jax.Array:
    """``y + b`` in ``y``'s dtype, ``b`` broadcastable to ``y`` (a ``(C,)`` bias, ``(B, 1, 1, C)``).

    If ``y`` is narrower than float32, ``b`` is broadcast in float32 and then cast (the same
    values): the gradient with respect to ``b``, the sum of ``y``'s cotangent over the broadcast
    axes, then accumulates in float32 instead of ``y``'s dtype. Otherwise the plain ``y + b``.
    """
    if jnp.finfo(y.dtype).bits >= 32:
        return y + b.astype(y.dtype)
    wide = jnp.promote_types(b.dtype, jnp.float32)
    return y + jnp.broadcast_to(b.astype(wide), y.shape).astype(y.dtype)


class Conv(nn.Module):
    """``nn.Conv(features, (k, k), (s, s), 'SAME', kernel_dilation=(d, d))``, same variables.

    ``fast_paths``: the 1x1 matmul and the CPU 1-D kernel gradient (module docstring); ``False``
    computes every convolution with one ``lax.conv_general_dilated``.
    """

    features: int
    kernel_size: int = 3
    strides: int = 1
    dilation: int = 1
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros
    dtype: Optional[Any] = None
    fast_paths: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s, d = self.kernel_size, self.strides, self.dilation
        w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        dt = self.dtype if self.dtype is not None else jnp.result_type(x, w)
        x, w = x.astype(dt), w.astype(dt)
        fast = self.fast_paths and s == 1 and d == 1
        if fast and k == 1:
            y = jnp.dot(x, w[0, 0])
        elif fast and k % 2 == 1:
            y = conv_same(x, w)
        else:
            y = jax.lax.conv_general_dilated(x, w, (s, s), "SAME", rhs_dilation=(d, d),
                                             dimension_numbers=_DN)
        if self.use_bias:
            y = broadcast_add(y, self.param("bias", self.bias_init, (self.features,)))
        return y


class Dense(nn.Module):
    """``nn.Dense(features)``: parameters ``kernel`` ``(in, features)`` and ``bias``; the bias is
    added by :func:`broadcast_add` (float32 bias gradient under bfloat16 compute)."""

    features: int
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        b = self.param("bias", self.bias_init, (self.features,))
        dt = self.dtype if self.dtype is not None else jnp.result_type(x, w, b)
        y = jax.lax.dot_general(x.astype(dt), w.astype(dt), (((x.ndim - 1,), (0,)), ((), ())))
        return broadcast_add(y, b)
