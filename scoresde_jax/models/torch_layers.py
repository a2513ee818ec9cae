"""Layers with PyTorch's semantics in NHWC, for networks whose weights come from PyTorch files
(:mod:`scoresde_jax.models.song_unet`, :mod:`scoresde_jax.models.diffusers_unet`).

Parameters are named as PyTorch names them (``weight``, ``bias``) so a state dict maps onto the
flax tree name for name; layouts are JAX's: a convolution kernel is HWIO (PyTorch: OIHW), a
linear weight is ``(in, out)`` (PyTorch: ``(out, in)``). :func:`from_torch_layout` converts.

* :class:`Linear`: ``x @ W + b``.
* :class:`Conv2d`: a stride-1 convolution with symmetric zero padding ``kernel // 2`` (or given).
* :class:`GroupNorm`: ``torch.nn.functional.group_norm``: mean and biased variance over each
  group (two passes, in at least float32), ``(x - mean) / sqrt(var + eps) * weight + bias``.
* :func:`fir_up` / :func:`fir_down`: depthwise FIR resampling by 2 with PyTorch's padding
  arguments (``conv_transpose2d(x, 4 f, stride=2, padding=p)`` / ``conv2d(x, f, stride=2,
  padding=p)`` with the 2-D filter ``f = outer(f1, f1) / sum(f1)^2``).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models.up_down import upfirdn_2d

_DN = ("NHWC", "HWIO", "NHWC")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": nn.silu, "swish": nn.silu, "relu": nn.relu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
}
"""PyTorch activation names (diffusers' ``get_activation``) -> functions."""


def torch_init(scale: float = 1.0):
    """A small uniform initializer (the values are replaced by the loaded weights)."""
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def from_torch_layout(array: np.ndarray, kind: str) -> np.ndarray:
    """A PyTorch parameter in this module's layout: ``conv`` OIHW -> HWIO, ``linear`` (out, in)
    -> (in, out), anything else unchanged."""
    a = np.asarray(array)
    if kind == "conv":
        return np.transpose(a, (2, 3, 1, 0))
    if kind == "linear":
        return a.T
    return a


class Linear(nn.Module):
    """``torch.nn.Linear``: ``x @ weight + bias`` with ``weight`` of shape ``(in, out)``."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("weight", torch_init(), (x.shape[-1], self.features), jnp.float32)
        y = jnp.matmul(x, w.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                               jnp.float32).astype(x.dtype)
        return y


def conv2d(x: jax.Array, w: jax.Array, padding: int | Sequence[tuple[int, int]] = 0,
           stride: int = 1) -> jax.Array:
    """``torch.nn.functional.conv2d`` (a cross-correlation) of NHWC ``x`` with HWIO ``w``."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (stride, stride), padding,
                                        dimension_numbers=_DN)


class Conv2d(nn.Module):
    """``torch.nn.Conv2d(in, features, kernel, stride, padding)`` (weight HWIO)."""

    features: int
    kernel: int = 3
    stride: int = 1
    padding: Optional[int] = None  # default kernel // 2
    use_bias: bool = True
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel
        w = self.param("weight", torch_init(self.init_scale), (k, k, x.shape[-1], self.features),
                       jnp.float32)
        y = conv2d(x, w, k // 2 if self.padding is None else self.padding, self.stride)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,),
                               jnp.float32).astype(x.dtype)
        return y


def group_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, num_groups: int,
               eps: float) -> jax.Array:
    """``torch.nn.functional.group_norm`` of NHWC ``x``."""
    b, h, w, c = x.shape
    if num_groups <= 0 or c % num_groups:
        raise ValueError(f"GroupNorm: {num_groups} groups do not divide {c} channels.")
    ct = jnp.promote_types(x.dtype, jnp.float32)
    g = x.astype(ct).reshape(b, h * w, num_groups, c // num_groups)
    mean = jnp.mean(g, axis=(1, 3), keepdims=True)
    var = jnp.mean(jnp.square(g - mean), axis=(1, 3), keepdims=True)
    y = ((g - mean) * jax.lax.rsqrt(var + eps)).reshape(b, h, w, c)
    return (y * weight.astype(ct) + bias.astype(ct)).astype(x.dtype)


class GroupNorm(nn.Module):
    """``torch.nn.GroupNorm(num_groups, C, eps)`` with affine ``weight`` / ``bias``."""

    num_groups: int
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        weight = self.param("weight", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        return group_norm(x, weight, bias, self.num_groups, self.eps)


def _filter_1d(f: Sequence[float]) -> np.ndarray:
    f = np.asarray(f, np.float64)
    return f / f.sum()


def fir_up(x: jax.Array, f: Sequence[float], padding: int) -> jax.Array:
    """``conv_transpose2d(x, 4 outer(f, f) / sum(f)^2, stride=2, padding=padding)`` per channel:
    size ``2 H + len(f) - 2 - 2 padding``."""
    k = len(f)
    return upfirdn_2d(x, 2.0 * _filter_1d(f), up=2, pad0=k - 1 - padding, pad1=k - 2 - padding)


def fir_down(x: jax.Array, f: Sequence[float], padding: int) -> jax.Array:
    """``conv2d(x, outer(f, f) / sum(f)^2, stride=2, padding=padding)`` per channel (a
    correlation: the filter is flipped for :func:`upfirdn_2d`, which convolves)."""
    return upfirdn_2d(x, _filter_1d(f)[::-1].copy(), down=2, pad0=padding, pad1=padding)


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """``softmax(q k^T / sqrt(d)) v`` over ``(B, L, heads, d)`` arrays, the softmax in at least
    float32."""
    d = q.shape[-1]
    ct = jnp.promote_types(q.dtype, jnp.float32)
    w = jnp.einsum("bqhd,bkhd->bhqk", q.astype(ct), k.astype(ct) / np.sqrt(d))
    w = jax.nn.softmax(w, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", w, v)


def dropout(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
    """``torch.nn.functional.dropout`` inside ``module`` (its ``dropout`` rng when training)."""
    if not train or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)

