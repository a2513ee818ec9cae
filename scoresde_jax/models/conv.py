"""``Conv``: the variables and numbers of ``flax.linen.Conv`` (SAME padding), faster on XLA CPU.

* 1x1 convolutions run as a matmul over the channel axis (``x @ kernel[0, 0]``): the same
  function, and XLA CPU runs matmuls (and their gradients) faster than 1x1 convolutions.
* Odd square stride-1 convolutions (``conv_same``) keep the forward convolution, but on CPU the
  gradient with respect to the kernel at resolutions of 8 and above is computed from a 1-D
  formulation: ``conv(x, dw) = sum_dx conv1d_H(x[:, :, dx:dx + W], dw[:, dx])`` with ``B * W`` as
  the batch of the 1-D convolutions, whose transpose is a 1-D convolution contracting over
  ``B * W``. XLA's own kernel gradient contracts over the batch alone (8 for batch 8) and runs
  2-3x slower at 32x32, 1.5-2x at 16x16 and 8x8. Only the summation order changes (float32
  rounding, ~4e-6 relative).
  This is a ``custom_jvp`` (forward mode, e.g. the likelihood's ``jax.jvp``, keeps working; the
  tangent in ``x`` is the plain convolution); other backends and bfloat16 use the plain
  convolution.

The class is named ``Conv`` so modules get the same auto-names (``Conv_0``, ...) as with
``nn.Conv``: official checkpoints load unchanged. ``Dense`` is ``nn.Dense`` (same variables and
float32 numbers) with the bias added by :func:`broadcast_add`.

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
from jax.custom_derivatives import SymbolicZero

_DN = ("NHWC", "HWIO", "NHWC")
# Height and width from which the 1-D kernel-gradient formulation is used on CPU (measured on
# XLA CPU / YNNPACK, jax 0.10: 0.3-0.5x the kernel-gradient time at 32x32, 0.5-0.7x at 16x16 and
# 8x8, equal at 4x4; NCSN++ CIFAR-10 fwd+bwd CPU time 0.91x with 8 instead of 32).
MIN_SIZE_1D = 8


def _conv2d(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_DN)


def _conv_rows(x: jax.Array, w: jax.Array) -> jax.Array:
    """``_conv2d(x, w)`` as ``k`` 1-D convolutions along H over the batch ``B * W``.

    The 1-D convolutions read ``x`` laid out ``(C, H + 2p, B * W)`` and write ``(H, B * W, O)``:
    the layouts XLA CPU's kernel-gradient convolution (contracting over ``B * W``) wants, so the
    transpose of ``x`` is made once here (one transpose) instead of once per ``dx`` inside XLA.
    """
    b, h, ww, c = x.shape
    k = w.shape[0]
    p = k // 2
    xt = jnp.pad(jnp.transpose(x, (3, 1, 0, 2)), ((0, 0), (p, p), (0, 0), (p, p)))
    y = None
    for dx in range(k):
        rows = xt[..., dx:dx + ww].reshape(c, h + 2 * p, b * ww)  # (C, H + 2p, B * W)
        t = jax.lax.conv_general_dilated(rows, jnp.transpose(w[:, dx], (1, 0, 2)), (1,), "VALID",
                                         dimension_numbers=("CWN", "IWO", "WNC"))
        y = t if y is None else y + t
    return jnp.transpose(y.reshape(h, b, ww, -1), (1, 0, 2, 3))


def _kernel_tangent(x: jax.Array, dw: jax.Array) -> jax.Array:
    # float32 / float64 only: in bfloat16 the three partial sums round apart (larger gradient error)
    if min(x.shape[1], x.shape[2]) < MIN_SIZE_1D or jnp.finfo(x.dtype).bits < 32:
        return _conv2d(x, dw)
    return jax.lax.platform_dependent(x, dw, cpu=_conv_rows, default=_conv2d)


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


@jax.custom_jvp
def conv_same(x: jax.Array, w: jax.Array) -> jax.Array:
    """Stride-1 ``SAME`` convolution of NHWC ``x`` with an odd square HWIO kernel ``w``."""
    return _conv2d(x, w)


def _conv_same_jvp(primals, tangents):
    x, w = primals
    dx, dw = tangents
    y = _conv2d(x, w)
    t = None
    if not isinstance(dx, SymbolicZero):
        t = _conv2d(dx, w)
    if not isinstance(dw, SymbolicZero):
        tw = _kernel_tangent(x, dw)
        t = tw if t is None else t + tw
    return y, jnp.zeros_like(y) if t is None else t


conv_same.defjvp(_conv_same_jvp, symbolic_zeros=True)


class Conv(nn.Module):
    """``nn.Conv(features, (k, k), strides, padding='SAME')`` with the same ``kernel`` / ``bias``."""

    features: int
    kernel_size: int = 3
    strides: int = 1
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, s = self.kernel_size, self.strides
        w = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features))
        dt = self.dtype if self.dtype is not None else jnp.result_type(x, w)
        x, w = x.astype(dt), w.astype(dt)
        if k == 1 and s == 1:
            y = jnp.dot(x, w[0, 0])
        elif s == 1 and k % 2 == 1:
            y = conv_same(x, w)
        else:
            y = jax.lax.conv_general_dilated(x, w, (s, s), "SAME", dimension_numbers=_DN)
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
