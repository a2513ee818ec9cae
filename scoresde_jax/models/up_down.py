"""FIR up/down-sampling (StyleGAN2's ``upfirdn2d``), as used by NCSN++ / DDPM++.

All functions take NHWC arrays. A 1-D FIR kernel ``k`` (e.g. ``(1, 3, 3, 1)``) is turned into the
separable 2-D kernel ``outer(k, k) / sum(outer(k, k))`` (``setup_kernel``).

``upfirdn_2d(x, k, up, down, pad0, pad1)`` computes, per image and channel (like
``scipy.signal.upfirdn``):

    1. insert ``up - 1`` zeros after every pixel (length H -> H * up),
    2. pad ``pad0`` zeros before and ``pad1`` after (negative values crop),
    3. convolve with ``k`` (a true convolution, the kernel is flipped), keeping the valid part,
    4. keep every ``down``-th pixel.

The fused ``upsample_conv_2d`` / ``conv_downsample_2d`` are the resampling convolutions of the
official score_sde ``Conv2d(up=True | down=True)`` layer: the padding is applied once.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

_DN = ("NHWC", "HWIO", "NHWC")


def setup_kernel(k: Sequence[float]) -> np.ndarray:
    """Normalized 2-D FIR kernel: ``outer(k, k) / sum`` for a 1-D ``k``, ``k / sum(k)`` for 2-D."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return k / np.sum(k)


def _setup_kernel_1d(k: Sequence[float]) -> np.ndarray:
    """1-D kernel ``k / sum(k)``: ``outer(k1, k1)`` equals ``setup_kernel(k)``."""
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 1:
        raise ValueError(f"expected a 1-D FIR kernel, got shape {k.shape}")
    return k / np.sum(k)


def _upfirdn_axis(x: jax.Array, k1: np.ndarray, axis: int, up: int, down: int, pad0: int,
                  pad1: int) -> jax.Array:
    """``upfirdn`` along one axis with a 1-D kernel: zero insertion, pad/crop, taps, stride."""
    cfg = [(0, 0, 0)] * x.ndim
    # interior padding inserts up - 1 zeros between samples; the official op also has them
    # after the last sample, hence + up - 1 at the end. Negative padding crops.
    cfg[axis] = (pad0, pad1 + up - 1, up - 1)
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)
    taps = np.asarray(k1)[::-1]  # flip: convolution, not correlation
    n = (x.shape[axis] - len(taps)) // down + 1
    out = None
    for j, w in enumerate(taps):
        sl = jax.lax.slice_in_dim(x, j, j + (n - 1) * down + 1, down, axis)
        term = sl * jnp.asarray(w, x.dtype)
        out = term if out is None else out + term
    return out


def upfirdn_2d(x: jax.Array, k: np.ndarray, *, up: int = 1, down: int = 1, pad0: int = 0,
               pad1: int = 0) -> jax.Array:
    """Pad, upsample (zero insertion), FIR-filter and downsample NHWC images (see module doc).

    ``k`` is a 2-D kernel, or a 1-D kernel ``k1`` meaning the separable ``outer(k1, k1)`` (applied
    as two 1-D passes of shifted slices, much faster on CPU than a depthwise convolution).
    Output size per spatial axis: ``(H * up + pad0 + pad1 - kh) // down + 1``.
    """
    if x.ndim != 4:
        raise ValueError(f"upfirdn_2d expects NHWC input, got shape {x.shape}")
    k = np.asarray(k)
    if k.ndim == 1:
        x = _upfirdn_axis(x, k, 1, up, down, pad0, pad1)
        return _upfirdn_axis(x, k, 2, up, down, pad0, pad1)
    c = x.shape[-1]
    # Zero insertion via lhs dilation gives (H - 1) * up + 1 samples; the official op also has
    # the up - 1 trailing zeros of the last pixel, so they are added to the end padding.
    pads = ((pad0, pad1 + up - 1), (pad0, pad1 + up - 1))
    w = jnp.asarray(k[::-1, ::-1].copy(), dtype=x.dtype)  # flip: convolution, not correlation
    w = jnp.tile(w[:, :, None, None], (1, 1, 1, c))  # depthwise HWIO: (kh, kw, 1, C)
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(down, down), padding=pads, lhs_dilation=(up, up),
        dimension_numbers=_DN, feature_group_count=c)


def _kernel(k: Sequence[float] | None, factor: int, scale: float) -> np.ndarray:
    """The FIR kernel times ``scale``: 1-D (separable, per-axis sqrt(scale)) when given 1-D."""
    k = np.asarray([1] * factor if k is None else k, dtype=np.float64)
    if k.ndim == 1:
        return _setup_kernel_1d(k) * np.sqrt(scale)
    return setup_kernel(k) * scale


def upsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2,
                gain: float = 1.0) -> jax.Array:
    """FIR upsampling by ``factor``: ``(B, H, W, C) -> (B, H*factor, W*factor, C)``.

    The kernel is normalized so a constant image stays constant (times ``gain``).
    """
    k = _kernel(k, factor, gain * factor**2)
    p = k.shape[0] - factor
    return upfirdn_2d(x, k, up=factor, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2)


def downsample_2d(x: jax.Array, k: Sequence[float] | None = None, factor: int = 2,
                  gain: float = 1.0) -> jax.Array:
    """FIR downsampling by ``factor``: ``(B, H, W, C) -> (B, H//factor, W//factor, C)``."""
    k = _kernel(k, factor, gain)
    p = k.shape[0] - factor
    return upfirdn_2d(x, k, down=factor, pad0=(p + 1) // 2, pad1=p // 2)


def upsample_conv_2d(x: jax.Array, w: jax.Array, k: Sequence[float] | None = None,
                     factor: int = 2, gain: float = 1.0) -> jax.Array:
    """Fused transposed convolution (stride ``factor``) with HWIO weight ``w``, then FIR filter.

    The transposed convolution is the gradient of a strided ``VALID`` convolution with ``w``
    (TF ``conv2d_transpose``), i.e. a convolution of the ``factor``-dilated input with ``w``
    padded by ``kernel - 1`` (+ ``factor - 1`` at the end). Output ``(B, H*factor, W*factor, O)``.
    """
    kw_ = w.shape[0]
    if w.ndim != 4 or w.shape[1] != kw_:
        raise ValueError(f"upsample_conv_2d expects a square HWIO kernel, got {w.shape}")
    kk = _kernel(k, factor, gain * factor**2)
    p = (kk.shape[0] - factor) - (kw_ - 1)
    # Zero insertion and padding done explicitly (lax.pad) followed by a plain VALID convolution:
    # the same as lhs_dilation in conv_general_dilated, with a faster gradient on CPU.
    pad_a = kw_ - 1
    pad_b = factor - 1 + max(kw_ - factor, 0)
    cfg = [(0, 0, 0), (pad_a, pad_b, factor - 1), (pad_a, pad_b, factor - 1), (0, 0, 0)]
    z = jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)
    y = jax.lax.conv_general_dilated(z, w.astype(x.dtype), window_strides=(1, 1),
                                     padding="VALID", dimension_numbers=_DN)
    return upfirdn_2d(y, kk, pad0=(p + 1) // 2 + factor - 1, pad1=p // 2 + 1)


def conv_downsample_2d(x: jax.Array, w: jax.Array, k: Sequence[float] | None = None,
                       factor: int = 2, gain: float = 1.0) -> jax.Array:
    """Fused FIR filter followed by a stride-``factor`` ``VALID`` convolution with HWIO ``w``."""
    kw_ = w.shape[0]
    if w.ndim != 4 or w.shape[1] != kw_:
        raise ValueError(f"conv_downsample_2d expects a square HWIO kernel, got {w.shape}")
    kk = _kernel(k, factor, gain)
    p = (kk.shape[0] - factor) + (kw_ - 1)
    y = upfirdn_2d(x, kk, pad0=(p + 1) // 2, pad1=p // 2)
    return jax.lax.conv_general_dilated(
        y, w.astype(x.dtype), window_strides=(factor, factor), padding="VALID",
        dimension_numbers=_DN)


def naive_upsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Nearest-neighbour upsampling (each pixel repeated ``factor`` x ``factor`` times)."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample_2d(x: jax.Array, factor: int = 2) -> jax.Array:
    """Average pooling over non-overlapping ``factor`` x ``factor`` blocks."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // factor, factor, w // factor, factor, c)
    return jnp.mean(x, axis=(2, 4))
