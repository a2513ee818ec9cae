"""``conv_same``: a stride-1 ``SAME`` convolution whose kernel gradient on CPU is 1-D convolutions.

The forward value and the tangent with respect to the input are the plain 2-D convolution. The
tangent with respect to the kernel (and so, by transposition, the kernel gradient) is computed on
XLA CPU from a 1-D formulation::

    conv(x, dw) = sum_dx conv1d_H(x[:, :, dx:dx + W], dw[:, dx])

with ``B * W`` as the batch of the 1-D convolutions, whose transpose is a 1-D convolution
contracting over ``B * W``. XLA CPU's own kernel gradient contracts over the batch ``B`` alone,
which is slow for the small batches of CPU training. Only the summation order changes (float32
rounding, ~4e-6 relative).

The 1-D formulation is used only on CPU, for float32 / float64, and for heights and widths of at
least :data:`MIN_SIZE_1D`; everywhere else (other backends, bfloat16, small images) the kernel
tangent is the plain convolution too. ``conv_same`` is a ``custom_jvp``, so forward mode (e.g. the
likelihood's ``jax.jvp``) keeps working.

:class:`scoresde_jax.models.conv.Conv` uses it for odd square stride-1 undilated kernels when its
``fast_paths`` switch is on (the default; NCSN++, DDPM++, DDPM).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

_DN = ("NHWC", "HWIO", "NHWC")

# Smallest height and width at which the 1-D kernel-gradient formulation is used on CPU; below it
# the plain convolution is used (see benchmarks/README.md for the measurements behind the value).
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
