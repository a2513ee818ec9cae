"""EDM's networks (Karras et al. 2022, github.com/NVlabs/edm ``training/networks.py``) in flax:
the ``SongUNet`` of its DDPM++ / NCSN++ configurations and the VP / VE / EDM preconditioners.

Written from the paper and the published architecture description; the parameter tree mirrors
EDM's state dict (``model.enc.32x32_block0.conv0.weight`` -> ``model/enc_32x32_block0/conv0/
weight``), with JAX layouts (:mod:`scoresde_jax.models.torch_layers`).

``SongUNet(x, noise_labels, class_labels)``: a mapping network (positional embedding with
``endpoint=True`` or a Fourier embedding of the noise label, its halves swapped to
``[sin, cos]``; plus ``map_label(class_labels * sqrt(label_dim))`` and ``map_augment``), an
encoder (``standard``, ``skip`` or ``residual``: the NCSN++ input pyramid, a fused
conv + FIR-downsampling with a ``1/sqrt(2)`` merge), a decoder (``standard`` / ``skip``) of
``UNetBlock``s (GroupNorm with ``min(32, C // 4)`` groups, eps 1e-6, additive embedding,
``skip_scale = sqrt(1/2)``, single-head attention from one interleaved ``qkv`` convolution) and
the FIR resample filter ``[1, 1]`` (DDPM++) or ``[1, 3, 3, 1]`` (NCSN++).

:class:`EDMSongUNet` is a preconditioned network ``D(x; sigma) = c_skip x + c_out F(c_in x,
c_noise)`` (EDM Table 1, data in ``[-1, 1]``):

======  ==================================  ===============  =========================
precond c_skip, c_out                         c_in             c_noise
======  ==================================  ===============  =========================
vp      1, -sigma                           1/sqrt(s^2+1)    (M - 1) t(sigma)
ve      1, sigma                            1                log(sigma / 2)
edm     sd^2/(s^2+sd^2), s sd/sqrt(s^2+sd^2) 1/sqrt(s^2+sd^2) log(sigma) / 4
======  ==================================  ===============  =========================

with ``t(sigma) = (sqrt(beta_min^2 + 2 beta_d log(1 + sigma^2)) - beta_min) / beta_d`` (VP).
:meth:`EDMSongUNet.denoise` is ``D``; ``__call__(x, labels)`` is the network in this library's
convention (:mod:`scoresde_jax.parameterization`) for the SDE named by ``sde``: ``'ve'`` (labels
``sigma``, output the score ``(D(x; sigma) - x) / sigma^2``) or ``'vp'`` (labels ``(N - 1) t``
of the VP SDE with ``beta_min`` and ``beta_max = beta_min + beta_d``, output the noise
prediction ``(x / a - D(x / a; s / a)) / (s / a)``) or ``'edm'`` (``precond='edm'`` on the EDM SDE:
input ``c_in x``, labels ``c_noise``, output ``F``; the ``('edm', *)`` row of the parameterization
table applies ``c_skip`` and ``c_out`` with the SDE's ``sigma_data``). Class labels are integers ``(B,)``
(``label_dim`` = the null class: a zero label vector, as EDM's ``class_labels=None``) or
one-hot vectors ``(B, label_dim)``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models.torch_layers import (Linear, attention, conv2d, dropout, fir_down,
                                              fir_up, group_norm, torch_init)


class EDMConv2d(nn.Module):
    """EDM's ``Conv2d``: optional FIR up/down-sampling (``resample_filter``) around a
    ``kernel`` x ``kernel`` convolution (``kernel=0``: resampling only); ``fused_resample``
    pads once (down: convolution, then filter with stride 2; up: the reverse)."""

    out_channels: int
    kernel: int
    use_bias: bool = True
    up: bool = False
    down: bool = False
    resample_filter: Sequence[int] = (1, 1)
    fused_resample: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel
        w = b = None
        if k:
            w = self.param("weight", torch_init(), (k, k, x.shape[-1], self.out_channels),
                           jnp.float32)
            if self.use_bias:
                b = self.param("bias", nn.initializers.zeros, (self.out_channels,), jnp.float32)
        f = tuple(self.resample_filter)
        w_pad = k // 2
        f_pad = (len(f) - 1) // 2
        if self.fused_resample and self.up and w is not None:
            x = fir_up(x, f, max(f_pad - w_pad, 0))
            x = conv2d(x, w, max(w_pad - f_pad, 0))
        elif self.fused_resample and self.down and w is not None:
            x = conv2d(x, w, w_pad + f_pad)
            x = fir_down(x, f, 0)
        else:
            if self.up:
                x = fir_up(x, f, f_pad)
            if self.down:
                x = fir_down(x, f, f_pad)
            if w is not None:
                x = conv2d(x, w, w_pad)
        if b is not None:
            x = x + b.astype(x.dtype)
        return x


class EDMGroupNorm(nn.Module):
    """EDM's ``GroupNorm``: ``min(num_groups, C // min_channels_per_group)`` groups."""

    num_groups: int = 32
    min_channels_per_group: int = 4
    eps: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        weight = self.param("weight", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        groups = min(self.num_groups, c // self.min_channels_per_group)
        return group_norm(x, weight, bias, groups, self.eps)


class UNetBlock(nn.Module):
    """EDM's ``UNetBlock`` (DDPM++ / NCSN++ settings of ``SongUNet``: ``adaptive_scale=False``,
    ``resample_proj=True``)."""

    in_channels: int
    out_channels: int
    up: bool = False
    down: bool = False
    num_heads: int = 0
    dropout: float = 0.0
    skip_scale: float = 1.0
    eps: float = 1e-5
    resample_filter: Sequence[int] = (1, 1)
    resample_proj: bool = False
    adaptive_scale: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, train: bool = False) -> jax.Array:
        cout = self.out_channels
        rs = dict(resample_filter=self.resample_filter)
        orig = x
        x = EDMGroupNorm(eps=self.eps, name="norm0")(x)
        x = EDMConv2d(cout, 3, up=self.up, down=self.down, name="conv0", **rs)(nn.silu(x))
        params = Linear(cout * (2 if self.adaptive_scale else 1), name="affine")(emb)
        params = params[:, None, None, :].astype(x.dtype)
        norm1 = EDMGroupNorm(eps=self.eps, name="norm1")
        if self.adaptive_scale:
            scale, shift = jnp.split(params, 2, axis=-1)
            x = nn.silu(shift + norm1(x) * (scale + 1))
        else:
            x = nn.silu(norm1(x + params))
        x = dropout(self, x, self.dropout, train)
        x = EDMConv2d(cout, 3, name="conv1")(x)
        if cout != self.in_channels or self.up or self.down:
            kernel = 1 if self.resample_proj or cout != self.in_channels else 0
            orig = EDMConv2d(cout, kernel, up=self.up, down=self.down, name="skip", **rs)(orig)
        x = (x + orig) * self.skip_scale
        if self.num_heads:
            b, h, w, c = x.shape
            qkv = EDMConv2d(3 * c, 1, name="qkv")(EDMGroupNorm(eps=self.eps, name="norm2")(x))
            # EDM's channel order of qkv is (head, channel, {q, k, v}).
            qkv = qkv.reshape(b, h * w, self.num_heads, c // self.num_heads, 3)
            a = attention(qkv[..., 0], qkv[..., 1], qkv[..., 2]).reshape(b, h, w, c)
            x = (EDMConv2d(c, 1, name="proj")(a) + x) * self.skip_scale
        return x


def positional_embedding(x: jax.Array, num_channels: int, max_positions: int = 10000,
                         endpoint: bool = False) -> jax.Array:
    """EDM's ``PositionalEmbedding``: ``[cos(x f), sin(x f)]``, ``f_i = (1 / max_positions) **
    (i / (C/2 - endpoint))``."""
    half = num_channels // 2
    freqs = np.arange(half, dtype=np.float32) / np.float32(half - (1 if endpoint else 0))
    freqs = (np.float32(1) / np.float32(max_positions)) ** freqs
    x = x[:, None] * jnp.asarray(freqs, x.dtype)[None, :]
    return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class FourierEmbedding(nn.Module):
    """EDM's ``FourierEmbedding``: ``[cos(2 pi x f), sin(2 pi x f)]`` with the buffer ``freqs``
    (``num_channels / 2`` draws of N(0, 16^2))."""

    num_channels: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        freqs = self.param("freqs", nn.initializers.normal(16.0), (self.num_channels // 2,))
        x = x[:, None] * (2 * np.pi * freqs).astype(x.dtype)[None, :]
        return jnp.concatenate([jnp.cos(x), jnp.sin(x)], axis=1)


class SongUNet(nn.Module):
    """EDM's ``SongUNet`` (DDPM++ / NCSN++); the arguments are EDM's (see the module doc)."""

    img_resolution: int
    in_channels: int
    out_channels: int
    label_dim: int = 0
    augment_dim: int = 0
    model_channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.10
    label_dropout: float = 0.0
    embedding_type: str = "positional"
    channel_mult_noise: int = 1
    encoder_type: str = "standard"
    decoder_type: str = "standard"
    resample_filter: Sequence[int] = (1, 1)

    @nn.compact
    def __call__(self, x: jax.Array, noise_labels: jax.Array, class_labels: Optional[jax.Array]
                 = None, augment_labels: Optional[jax.Array] = None, train: bool = False):
        if self.embedding_type not in ("fourier", "positional"):
            raise ValueError(f"embedding_type={self.embedding_type!r}: fourier or positional")
        if self.encoder_type not in ("standard", "skip", "residual"):
            raise ValueError(f"encoder_type={self.encoder_type!r}: standard, skip or residual")
        if self.decoder_type not in ("standard", "skip"):
            raise ValueError(f"decoder_type={self.decoder_type!r}: standard or skip")
        mc = self.model_channels
        emb_channels = mc * self.channel_mult_emb
        noise_channels = mc * self.channel_mult_noise
        rf = tuple(self.resample_filter)
        block = dict(dropout=self.dropout, skip_scale=float(np.sqrt(0.5)), eps=1e-6,
                     resample_filter=rf, resample_proj=True, adaptive_scale=False)

        # Mapping.
        if self.embedding_type == "positional":
            emb = positional_embedding(noise_labels, noise_channels, endpoint=True)
        else:
            emb = FourierEmbedding(noise_channels, name="map_noise")(noise_labels)
        emb = jnp.concatenate(jnp.split(emb, 2, axis=1)[::-1], axis=1)  # swap to [sin, cos]
        if self.label_dim:
            tmp = class_labels
            if train and self.label_dropout:
                keep = jax.random.uniform(self.make_rng("dropout"), (x.shape[0], 1))
                tmp = tmp * (keep >= self.label_dropout).astype(tmp.dtype)
            emb = emb + Linear(noise_channels, name="map_label")(tmp * np.sqrt(self.label_dim))
        if self.augment_dim and augment_labels is not None:
            emb = emb + Linear(noise_channels, use_bias=False, name="map_augment")(augment_labels)
        elif self.augment_dim and self.is_initializing():
            Linear(noise_channels, use_bias=False, name="map_augment")(
                jnp.zeros((x.shape[0], self.augment_dim), x.dtype))
        emb = nn.silu(Linear(emb_channels, name="map_layer0")(emb))
        emb = nn.silu(Linear(emb_channels, name="map_layer1")(emb))

        # Encoder.
        skips = []
        aux = x
        cout = caux = self.in_channels
        for level, mult in enumerate(self.channel_mult):
            res = self.img_resolution >> level
            if level == 0:
                cout = mc
                x = EDMConv2d(cout, 3, name=f"enc_{res}x{res}_conv")(x)
                skips.append(x)
            else:
                x = UNetBlock(cout, cout, down=True, name=f"enc_{res}x{res}_down",
                              **block)(x, emb, train)
                skips.append(x)
                if self.encoder_type == "skip":
                    aux = EDMConv2d(caux, 0, down=True, resample_filter=rf,
                                    name=f"enc_{res}x{res}_aux_down")(aux)
                    x = skips[-1] = x + EDMConv2d(cout, 1, name=f"enc_{res}x{res}_aux_skip")(aux)
                if self.encoder_type == "residual":
                    conv = EDMConv2d(cout, 3, down=True, resample_filter=rf, fused_resample=True,
                                     name=f"enc_{res}x{res}_aux_residual")
                    x = skips[-1] = aux = (x + conv(aux)) / np.sqrt(2)
                    caux = cout
            for idx in range(self.num_blocks):
                cin, cout = cout, mc * mult
                heads = 1 if res in self.attn_resolutions else 0
                x = UNetBlock(cin, cout, num_heads=heads, name=f"enc_{res}x{res}_block{idx}",
                              **block)(x, emb, train)
                skips.append(x)

        # Decoder.
        aux = None
        last = len(self.channel_mult) - 1
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            res = self.img_resolution >> level
            if level == last:
                x = UNetBlock(cout, cout, num_heads=1, name=f"dec_{res}x{res}_in0",
                              **block)(x, emb, train)
                x = UNetBlock(cout, cout, name=f"dec_{res}x{res}_in1", **block)(x, emb, train)
            else:
                x = UNetBlock(cout, cout, up=True, name=f"dec_{res}x{res}_up", **block)(x, emb,
                                                                                       train)
            for idx in range(self.num_blocks + 1):
                x = jnp.concatenate([x, skips.pop()], axis=-1)
                cin, cout = x.shape[-1], mc * mult
                heads = 1 if idx == self.num_blocks and res in self.attn_resolutions else 0
                x = UNetBlock(cin, cout, num_heads=heads, name=f"dec_{res}x{res}_block{idx}",
                              **block)(x, emb, train)
            if self.decoder_type == "skip" or level == 0:
                if self.decoder_type == "skip" and level < last:
                    aux = EDMConv2d(self.out_channels, 0, up=True, resample_filter=rf,
                                    name=f"dec_{res}x{res}_aux_up")(aux)
                tmp = EDMGroupNorm(eps=1e-6, name=f"dec_{res}x{res}_aux_norm")(x)
                tmp = EDMConv2d(self.out_channels, 3, name=f"dec_{res}x{res}_aux_conv")(
                    nn.silu(tmp))
                aux = tmp if aux is None else tmp + aux
        return aux


PRECONDS = ("vp", "ve", "edm")


class EDMSongUNet(nn.Module):
    """A preconditioned ``SongUNet`` (EDM's ``VPPrecond`` / ``VEPrecond`` / ``EDMPrecond``);
    see the module doc. ``sde`` picks what ``__call__`` computes ('ve', 'vp' or 'edm')."""

    precond: str
    img_resolution: int
    img_channels: int
    label_dim: int = 0
    augment_dim: int = 0
    model_channels: int = 128
    channel_mult: Sequence[int] = (1, 2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.10
    label_dropout: float = 0.0
    embedding_type: str = "positional"
    channel_mult_noise: int = 1
    encoder_type: str = "standard"
    decoder_type: str = "standard"
    resample_filter: Sequence[int] = (1, 1)
    sigma_data: float = 0.5  # edm
    beta_d: float = 19.9  # vp
    beta_min: float = 0.1  # vp
    M: int = 1000  # vp
    sde: str = "ve"
    num_scales: int = 1000  # N of the VP SDE ('vp' labels are (N - 1) t)

    @property
    def num_classes(self) -> int:
        """The number of classes (0: unconditional); ``num_classes`` is the null class."""
        return int(self.label_dim)

    def setup(self):
        if self.precond not in PRECONDS:
            raise ValueError(f"precond={self.precond!r}: one of {PRECONDS}")
        if self.sde not in ("ve", "vp", "edm") or (self.sde == "edm") != (self.precond == "edm"):
            raise ValueError(f"sde={self.sde!r}, precond={self.precond!r}: 've' (labels sigma) or "
                             "'vp' (labels (N-1) t), or 'edm' (labels c_noise) with precond 'edm'")
        self.model = SongUNet(
            self.img_resolution, self.img_channels, self.img_channels, self.label_dim,
            self.augment_dim, self.model_channels, tuple(self.channel_mult),
            self.channel_mult_emb, self.num_blocks, tuple(self.attn_resolutions), self.dropout,
            self.label_dropout, self.embedding_type, self.channel_mult_noise,
            self.encoder_type, self.decoder_type, tuple(self.resample_filter))

    def vp_sigma_inv(self, sigma: jax.Array) -> jax.Array:
        """The VP time of a noise level: ``t(sigma)`` of the module doc."""
        return (jnp.sqrt(self.beta_min ** 2 + 2 * self.beta_d * jnp.log1p(sigma ** 2))
                - self.beta_min) / self.beta_d

    def _labels(self, class_labels: Optional[jax.Array], batch: int, dtype) -> Optional[jax.Array]:
        if not self.label_dim:
            return None
        if class_labels is None:
            return jnp.zeros((batch, self.label_dim), dtype)
        y = jnp.asarray(class_labels)
        if y.ndim == 1 and jnp.issubdtype(y.dtype, jnp.integer):
            y = jax.nn.one_hot(y, self.label_dim, dtype=dtype)  # label_dim -> zeros
        return jnp.broadcast_to(y.astype(dtype).reshape(-1, self.label_dim), (batch, self.label_dim))

    def denoise(self, x: jax.Array, sigma: jax.Array, class_labels: Optional[jax.Array] = None,
                augment_labels: Optional[jax.Array] = None, train: bool = False) -> jax.Array:
        """EDM's ``D(x; sigma)`` of NHWC ``x`` and ``sigma`` of shape ``(B,)`` (or scalar)."""
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype).reshape(-1), (x.shape[0],))
        s = sigma[:, None, None, None]
        if self.precond == "vp":
            c_skip, c_out, c_in = 1.0, -s, 1 / jnp.sqrt(s ** 2 + 1)
            c_noise = (self.M - 1) * self.vp_sigma_inv(sigma)
        elif self.precond == "ve":
            c_skip, c_out, c_in = 1.0, s, 1.0
            c_noise = jnp.log(0.5 * sigma)
        else:
            sd = self.sigma_data
            c_skip = sd ** 2 / (s ** 2 + sd ** 2)
            c_out = s * sd / jnp.sqrt(s ** 2 + sd ** 2)
            c_in = 1 / jnp.sqrt(sd ** 2 + s ** 2)
            c_noise = jnp.log(sigma) / 4
        f = self.model(c_in * x, c_noise, self._labels(class_labels, x.shape[0], x.dtype),
                       augment_labels, train)
        return c_skip * x + c_out * f

    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False,
                 class_labels: Optional[jax.Array] = None) -> jax.Array:
        if self.sde == "edm":  # F(c_in x, c_noise): x and labels come scaled (see the module doc)
            c_noise = jnp.broadcast_to(jnp.asarray(labels, x.dtype).reshape(-1), (x.shape[0],))
            return self.model(x, c_noise, self._labels(class_labels, x.shape[0], x.dtype),
                              None, train)
        if self.sde == "ve":
            sigma = jnp.asarray(labels, x.dtype)
            d = self.denoise(x, sigma, class_labels, train=train)
            return (d - x) / (sigma ** 2)[:, None, None, None]
        t = jnp.asarray(labels, x.dtype) / (self.num_scales - 1)
        log_a = -0.25 * t ** 2 * self.beta_d - 0.5 * t * self.beta_min
        a = jnp.exp(log_a)[:, None, None, None]
        sigma = jnp.sqrt(jnp.expm1(0.5 * self.beta_d * t ** 2 + self.beta_min * t))
        x_ve = x / a
        d = self.denoise(x_ve, sigma, class_labels, train=train)
        return (x_ve - d) / sigma[:, None, None, None]
