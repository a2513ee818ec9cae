"""Layers shared by NCSN++ / DDPM++ (``unet.py``) and DDPM (``ddpm.py``).

Parameter names follow the official score_sde flax code (``NIN_0/W``, ``Conv_0/kernel``,
``Conv2d_0/weight``, ``GaussianFourierProjection_0/W``, ...), so official checkpoints map onto
these modules one to one (``scoresde_jax.pretrained.score_sde``).

Every module takes ``dtype`` (the computation dtype, e.g. ``jnp.bfloat16``; ``None`` follows the
inputs) while parameters stay float32 (``param_dtype``).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models import up_down
from scoresde_jax.models.conv import Conv, Dense, broadcast_add
from scoresde_jax.models.norm import GroupNorm

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "elu": nn.elu,
    "relu": nn.relu,
    "lrelu": functools.partial(nn.leaky_relu, negative_slope=0.2),
    "swish": nn.swish,
    "silu": nn.swish,
}



def check_inputs(name: str, x: jax.Array, labels: jax.Array) -> None:
    """Raise a ValueError naming the network unless ``x`` is ``(B, H, W, C)`` and labels ``(B,)``."""
    if x.ndim != 4 or labels.shape != (x.shape[0],):
        raise ValueError(f"{name} expects x (B, H, W, C) and labels (B,), got {x.shape} and "
                         f"{labels.shape}")

def get_act(name: str) -> Callable[[jax.Array], jax.Array]:
    """Activation by name (``ACTIVATIONS``): elu, relu, lrelu (slope 0.2), swish."""
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(
            f"unknown nonlinearity {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def default_init(scale: float = 1.0):
    """DDPM initializer: variance scaling (fan_avg, uniform); scale 0 means 1e-10 (as official)."""
    scale = 1e-10 if scale == 0 else scale
    return nn.initializers.variance_scaling(scale, "fan_avg", "uniform")


def _compute_dtype(dtype: Optional[Dtype], *arrays) -> Dtype:
    return dtype if dtype is not None else jnp.result_type(*arrays)


def conv3x3(x: jax.Array, out_ch: int, *, stride: int = 1, bias: bool = True,
            init_scale: float = 1.0, dtype: Optional[Dtype] = None) -> jax.Array:
    """3x3 ``SAME`` convolution with DDPM init; call inside a compact module (named ``Conv_k``).

    :class:`scoresde_jax.models.conv.Conv`: ``nn.Conv``'s variables, faster gradients on CPU.
    """
    return Conv(out_ch, kernel_size=3, strides=stride, use_bias=bias,
                kernel_init=default_init(init_scale), dtype=dtype)(x)


def conv1x1(x: jax.Array, out_ch: int, *, stride: int = 1, bias: bool = True,
            init_scale: float = 1.0, dtype: Optional[Dtype] = None) -> jax.Array:
    """1x1 convolution with DDPM init (named ``Conv_k`` in the calling module; a matmul)."""
    return Conv(out_ch, kernel_size=1, strides=stride, use_bias=bias,
                kernel_init=default_init(init_scale), dtype=dtype)(x)


def group_norm(x: jax.Array, num_groups: Optional[int] = None,
               dtype: Optional[Dtype] = None) -> jax.Array:
    """GroupNorm with ``min(C // 4, 32)`` groups unless given (named ``GroupNorm_k``).

    :class:`scoresde_jax.models.norm.GroupNorm`: ``nn.GroupNorm``'s variables, faster on CPU.
    """
    groups = num_groups if num_groups is not None else min(x.shape[-1] // 4, 32)
    return GroupNorm(num_groups=groups, epsilon=1e-6, dtype=dtype)(x)


def get_timestep_embedding(timesteps: jax.Array, embedding_dim: int,
                           max_positions: int = 10000) -> jax.Array:
    """Sinusoidal embedding (Transformer / DDPM) of a ``(B,)`` vector: ``(B, embedding_dim)``.

    ``emb_i = [sin(t w_j), cos(t w_j)]`` with ``w_j = exp(-j log(max_positions) / (d/2 - 1))``.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must have shape (B,), got {timesteps.shape}")
    is_float = jnp.issubdtype(timesteps.dtype, jnp.floating)
    ftype = timesteps.dtype if is_float else jnp.result_type(float)
    half = embedding_dim // 2
    freqs = jnp.exp(jnp.arange(half, dtype=ftype) * -(math.log(max_positions) / (half - 1)))
    emb = timesteps.astype(ftype)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, [[0, 0], [0, 1]])
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features ``[sin(2 pi x W), cos(2 pi x W)]``, ``W ~ N(0, scale^2)`` (fixed).

    ``W`` is a parameter (as in the official code, so it is saved in checkpoints) but receives
    no gradient.
    """

    embedding_size: int = 256
    scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,))
        w = jax.lax.stop_gradient(w).astype(x.dtype)
        x_proj = x[:, None] * w[None, :] * (2 * np.pi)
        return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)


class NIN(nn.Module):
    """Network-in-network: a dense layer over the channel axis, parameters ``W`` and ``b``."""

    num_units: int
    init_scale: float = 0.1
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("W", default_init(self.init_scale), (x.shape[-1], self.num_units))
        b = self.param("b", nn.initializers.zeros, (self.num_units,))
        dt = _compute_dtype(self.dtype, x, w)
        return broadcast_add(jnp.tensordot(x.astype(dt), w.astype(dt), axes=1), b)


class Combine(nn.Module):
    """Combine skip input ``x`` with ``y``: 1x1 conv of ``x`` to ``y``'s channels, then sum/cat."""

    method: str = "cat"
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        h = conv1x1(x, y.shape[-1], dtype=self.dtype)
        if self.method == "cat":
            return jnp.concatenate([h, y.astype(h.dtype)], axis=-1)
        if self.method == "sum":
            return h + y
        raise ValueError(f"progressive_combine {self.method!r} not recognized (use 'sum' or 'cat')")


class AttnBlockpp(nn.Module):
    """Spatial self-attention over all H*W positions (one head), residual connection.

    ``out = x + NIN(softmax(q k^T / sqrt(C)) v)``, divided by sqrt(2) with ``skip_rescale``.
    """

    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: Optional[int] = None
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        h = group_norm(x, self.num_groups, self.dtype)
        q = NIN(c, dtype=self.dtype)(h)
        k = NIN(c, dtype=self.dtype)(h)
        v = NIN(c, dtype=self.dtype)(h)
        w = jnp.einsum("bhwc,bHWc->bhwHW", q, k) * (int(c) ** (-0.5))
        w = w.reshape(b, hh, ww, hh * ww)
        w = jax.nn.softmax(w.astype(jnp.promote_types(w.dtype, jnp.float32)), axis=-1)
        w = w.astype(v.dtype).reshape(b, hh, ww, hh, ww)
        h = jnp.einsum("bhwHW,bHWc->bhwc", w, v)
        h = NIN(c, init_scale=self.init_scale, dtype=self.dtype)(h)
        return _skip_sum(x, h, self.skip_rescale)


class AttnBlock(AttnBlockpp):
    """The DDPM attention block: GroupNorm(32), zero-initialized output, no rescaling."""

    num_groups: Optional[int] = 32


class Resample(nn.Module):
    """The options of :class:`Upsample` and :class:`Downsample`: ``out_ch`` (default: the input's
    channels), a convolution (``with_conv``) and FIR filtering with ``fir_kernel`` (``fir``)."""

    out_ch: Optional[int] = None
    with_conv: bool = False
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: Optional[Dtype] = None

    def out_channels(self, x: jax.Array) -> int:
        """``out_ch``, or the channels of ``x`` when it is not set."""
        return self.out_ch if self.out_ch else x.shape[-1]


class Upsample(Resample):
    """2x upsampling: nearest (+ 3x3 conv), or FIR (+ fused transposed 3x3 conv)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_channels(x)
        if not self.fir:
            h = up_down.naive_upsample_2d(x, 2)
            if self.with_conv:
                h = conv3x3(h, out_ch, dtype=self.dtype)
        elif not self.with_conv:
            h = up_down.upsample_2d(x, self.fir_kernel, factor=2)
        else:
            h = Conv2d(out_ch, kernel=3, up=True, resample_kernel=tuple(self.fir_kernel),
                       dtype=self.dtype)(x)
        return h


class Downsample(Resample):
    """2x downsampling: 2x2 average pool or stride-2 3x3 conv, or FIR (+ fused 3x3 conv)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out_ch = self.out_channels(x)
        if not self.fir:
            if self.with_conv:
                return conv3x3(x, out_ch, stride=2, dtype=self.dtype)
            return up_down.naive_downsample_2d(x, 2)
        if not self.with_conv:
            return up_down.downsample_2d(x, self.fir_kernel, factor=2)
        return Conv2d(out_ch, kernel=3, down=True, resample_kernel=tuple(self.fir_kernel),
                      dtype=self.dtype)(x)


class Conv2d(nn.Module):
    """Convolution with optional fused FIR up/downsampling (StyleGAN2); params ``weight``, ``bias``.

    Same layer and parameter names as the official ``up_or_down_sampling.Conv2d``.
    """

    fmaps: int
    kernel: int = 3
    up: bool = False
    down: bool = False
    resample_kernel: Sequence[int] = (1, 3, 3, 1)
    use_bias: bool = True
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.up and self.down:
            raise ValueError("Conv2d: up and down are exclusive")
        w = self.param("weight", default_init(),
                       (self.kernel, self.kernel, x.shape[-1], self.fmaps))
        dt = _compute_dtype(self.dtype, x, w)
        x = x.astype(dt)
        w = w.astype(dt)
        if self.up:
            y = up_down.upsample_conv_2d(x, w, self.resample_kernel)
        elif self.down:
            y = up_down.conv_downsample_2d(x, w, self.resample_kernel)
        else:
            y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = broadcast_add(y, self.param("bias", nn.initializers.zeros, (self.fmaps,)))
        return y


def _skip_sum(x: jax.Array, h: jax.Array, skip_rescale: bool) -> jax.Array:
    """The skip connection of the residual and attention blocks: ``x + h``, divided by ``sqrt(2)``
    with ``skip_rescale``."""
    out = x + h
    return out / np.sqrt(2.0) if skip_rescale else out


def _conv_temb_conv(block: nn.Module, h: jax.Array, temb: Optional[jax.Array], train: bool,
                    out_ch: int, num_groups: Optional[int]) -> jax.Array:
    """The body that :class:`ResnetBlockDDPMpp` and :class:`ResnetBlockBigGANpp` share after their
    first normalization (and resampling): 3x3 conv, ``+ Dense(act(temb))`` per channel,
    GroupNorm-act-dropout, 3x3 conv initialized with ``block.init_scale``; called in the block's
    compact ``__call__``, so the layers are the block's and keep its auto-names."""
    h = conv3x3(h, out_ch, dtype=block.dtype)
    if temb is not None:
        h = broadcast_add(h, Dense(out_ch, kernel_init=default_init(), dtype=block.dtype)(
            block.act(temb))[:, None, None, :])
    h = block.act(group_norm(h, num_groups, block.dtype))
    h = nn.Dropout(block.dropout)(h, deterministic=not train)
    return conv3x3(h, out_ch, init_scale=block.init_scale, dtype=block.dtype)


class ResnetBlockDDPMpp(nn.Module):
    """DDPM residual block: GN-act-conv, + Dense(temb), GN-act-dropout-conv, NIN/conv shortcut."""

    act: Callable[[jax.Array], jax.Array] = nn.swish
    out_ch: Optional[int] = None
    conv_shortcut: bool = False
    dropout: float = 0.1
    skip_rescale: bool = False
    init_scale: float = 0.0
    num_groups: Optional[int] = None
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, temb: Optional[jax.Array] = None,
                 train: bool = False) -> jax.Array:
        c = x.shape[-1]
        out_ch = self.out_ch if self.out_ch else c
        h = self.act(group_norm(x, self.num_groups, self.dtype))
        h = _conv_temb_conv(self, h, temb, train, out_ch, self.num_groups)
        if c != out_ch:
            if self.conv_shortcut:
                x = conv3x3(x, out_ch, dtype=self.dtype)
            else:
                x = NIN(out_ch, dtype=self.dtype)(x)
        return _skip_sum(x, h, self.skip_rescale)


class ResnetBlockDDPM(ResnetBlockDDPMpp):
    """The original DDPM residual block: GroupNorm(32), zero-initialized last conv, no rescale."""

    num_groups: Optional[int] = 32


class ResnetBlockBigGANpp(nn.Module):
    """BigGAN residual block with optional up/down sampling (FIR or nearest / average pooling)."""

    act: Callable[[jax.Array], jax.Array] = nn.swish
    up: bool = False
    down: bool = False
    out_ch: Optional[int] = None
    dropout: float = 0.1
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    init_scale: float = 0.0
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, temb: Optional[jax.Array] = None,
                 train: bool = False) -> jax.Array:
        c = x.shape[-1]
        out_ch = self.out_ch if self.out_ch else c
        h = self.act(group_norm(x, None, self.dtype))
        if self.up:
            if self.fir:
                h = up_down.upsample_2d(h, self.fir_kernel, factor=2)
                x = up_down.upsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = up_down.naive_upsample_2d(h, 2)
                x = up_down.naive_upsample_2d(x, 2)
        elif self.down:
            if self.fir:
                h = up_down.downsample_2d(h, self.fir_kernel, factor=2)
                x = up_down.downsample_2d(x, self.fir_kernel, factor=2)
            else:
                h = up_down.naive_downsample_2d(h, 2)
                x = up_down.naive_downsample_2d(x, 2)
        h = _conv_temb_conv(self, h, temb, train, out_ch, None)
        if c != out_ch or self.up or self.down:
            x = conv1x1(x, out_ch, dtype=self.dtype)
        return _skip_sum(x, h, self.skip_rescale)


def geometric_sigmas(sigma_min: float, sigma_max: float, num_scales: int) -> jax.Array:
    """SMLD noise levels ``exp(linspace(log sigma_max, log sigma_min, N))`` (index 0 = largest)."""
    return jnp.exp(jnp.linspace(math.log(sigma_max), math.log(sigma_min), num_scales))
