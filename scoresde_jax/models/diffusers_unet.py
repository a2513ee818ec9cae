"""diffusers' ``UNet2DModel`` in flax, for the DDPM (``google/ddpm-*``) and score-SDE-VE
(``google/ncsnpp-*``) pipelines: NHWC, the parameter tree mirrors the diffusers state dict
(``down_blocks.0.resnets.1.conv1.weight`` -> ``down_blocks_0/resnets_1/conv1/weight``, JAX
layouts as :mod:`scoresde_jax.models.torch_layers`).

Blocks: ``DownBlock2D``, ``AttnDownBlock2D``, ``SkipDownBlock2D``, ``AttnSkipDownBlock2D``,
``UNetMidBlock2D``, ``UpBlock2D``, ``AttnUpBlock2D``, ``SkipUpBlock2D``, ``AttnSkipUpBlock2D``
(``downsample_type = upsample_type = 'conv'``). Time embeddings: ``positional`` (sinusoidal of
the timestep with ``freq_shift`` and ``flip_sin_to_cos``) or ``fourier`` (``[sin, cos](2 pi
log(sigma) W)``; the output is then divided by ``sigma``, so a score-SDE-VE network outputs the
score). Group counts are diffusers', which are not always score_sde's ``min(C // 4, 32)``: the
plain blocks use ``norm_num_groups``; the skip blocks ``min(C_in // 4, 32)`` and ``min(C_out //
4, 32)``, their attention 32, and ``AttnSkipUpBlock2D`` ``min(C_prev + C_skip // 4, 32)`` (as
diffusers writes it). ``__call__(x, timesteps, train=False, class_labels=None)`` is the
network's ``sample`` output (DDPM: the noise prediction; VE: the score).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models.torch_layers import (ACTIVATIONS, Conv2d, GroupNorm, Linear, attention,
                                              dropout)
from scoresde_jax.models.up_down import downsample_2d, upsample_2d

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D")
FIR = (1, 3, 3, 1)


class ResnetBlock2D(nn.Module):
    """diffusers' ``ResnetBlock2D`` (``kernel='fir'`` for ``up`` / ``down``)."""

    out_channels: int
    groups: int
    groups_out: Optional[int] = None
    eps: float = 1e-6
    act: str = "silu"
    output_scale_factor: float = 1.0
    time_embedding_norm: str = "default"
    up: bool = False
    down: bool = False
    use_in_shortcut: Optional[bool] = None
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool = False) -> jax.Array:
        act = ACTIVATIONS[self.act]
        cout = self.out_channels
        h = act(GroupNorm(self.groups, self.eps, name="norm1")(x))
        if self.up:
            x, h = upsample_2d(x, FIR), upsample_2d(h, FIR)
        elif self.down:
            x, h = downsample_2d(x, FIR), downsample_2d(h, FIR)
        h = Conv2d(cout, 3, name="conv1")(h)
        scale_shift = self.time_embedding_norm == "scale_shift"
        t = Linear(2 * cout if scale_shift else cout, name="time_emb_proj")(act(temb))
        t = t[:, None, None, :]
        norm2 = GroupNorm(self.groups_out or self.groups, self.eps, name="norm2")
        if scale_shift:
            scale, shift = jnp.split(t, 2, axis=-1)
            h = norm2(h) * (1 + scale) + shift
        else:
            h = norm2(h + t)
        h = dropout(self, act(h), self.dropout, train)
        h = Conv2d(cout, 3, name="conv2")(h)
        shortcut = self.use_in_shortcut if self.use_in_shortcut is not None \
            else x.shape[-1] != cout
        if shortcut:
            x = Conv2d(cout, 1, name="conv_shortcut")(x)
        return (x + h) / self.output_scale_factor


class AttentionBlock(nn.Module):
    """diffusers' ``Attention`` on an image (group norm, ``to_q/k/v``, ``to_out.0``, residual,
    divided by ``rescale_output_factor``)."""

    heads: int
    groups: Optional[int]
    eps: float = 1e-6
    rescale_output_factor: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hh, ww, c = x.shape
        h = GroupNorm(self.groups, self.eps, name="group_norm")(x) if self.groups else x
        h = h.reshape(b, hh * ww, c)
        q, k, v = (Linear(c, name=n)(h).reshape(b, hh * ww, self.heads, c // self.heads)
                   for n in ("to_q", "to_k", "to_v"))
        a = attention(q, k, v).reshape(b, hh * ww, c)
        out = Linear(c, name="to_out_0")(a).reshape(b, hh, ww, c)
        return (out + x) / self.rescale_output_factor


def _heads(channels: int, head_dim: Optional[int]) -> int:
    return channels // (head_dim if head_dim is not None else channels)


def timestep_embedding(t: jax.Array, dim: int, flip_sin_to_cos: bool, shift: float) -> jax.Array:
    """diffusers' ``get_timestep_embedding`` (``max_period=10000``, ``scale=1``)."""
    half = dim // 2
    exponent = -np.log(10000.0) * np.arange(half, dtype=np.float32) / np.float32(half - shift)
    e = t.astype(jnp.float32)[:, None] * jnp.exp(jnp.asarray(exponent))[None, :]
    e = jnp.concatenate([jnp.sin(e), jnp.cos(e)], axis=-1)
    if flip_sin_to_cos:
        e = jnp.concatenate([e[:, half:], e[:, :half]], axis=-1)
    if dim % 2:
        e = jnp.pad(e, ((0, 0), (0, 1)))
    return e


class GaussianFourierProjection(nn.Module):
    """diffusers' ``GaussianFourierProjection(log=True)``: ``[sin, cos](2 pi log(x) W)``."""

    size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        w = self.param("weight", nn.initializers.normal(16.0), (self.size,), jnp.float32)
        proj = jnp.log(x)[:, None] * w[None, :] * 2 * np.pi
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class UNet2DModel(nn.Module):
    """diffusers' ``UNet2DModel`` (fields: its config keys; see the module doc)."""

    sample_size: int = 32
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_type: str = "positional"
    time_embedding_dim: Optional[int] = None
    freq_shift: float = 0
    flip_sin_to_cos: bool = True
    down_block_types: Sequence[str] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                       "AttnDownBlock2D")
    up_block_types: Sequence[str] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
                                     "UpBlock2D")
    block_out_channels: Sequence[int] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: int = 1
    dropout: float = 0.0
    act_fn: str = "silu"
    attention_head_dim: Optional[int] = 8
    norm_num_groups: Optional[int] = 32
    attn_norm_num_groups: Optional[int] = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    num_class_embeds: Optional[int] = None

    @property
    def num_classes(self) -> int:
        """Classes of ``class_embedding`` (0: unconditional); ``num_classes`` = a zero embedding."""
        return int(self.num_class_embeds or 0)

    def _check(self):
        bad = [t for t in self.down_block_types if t not in DOWN_BLOCKS] + \
            [t for t in self.up_block_types if t not in UP_BLOCKS]
        if bad:
            raise ValueError(f"UNet2DModel blocks {bad} are not supported; supported: "
                             f"{DOWN_BLOCKS + UP_BLOCKS}")
        if self.time_embedding_type not in ("positional", "fourier"):
            raise ValueError(f"time_embedding_type={self.time_embedding_type!r} is not "
                             "supported (positional or fourier)")
        if self.act_fn not in ACTIVATIONS:
            raise ValueError(f"act_fn={self.act_fn!r}: one of {sorted(ACTIVATIONS)}")

    @nn.compact
    def __call__(self, x: jax.Array, timesteps: jax.Array, train: bool = False,
                 class_labels: Optional[jax.Array] = None) -> jax.Array:
        self._check()
        ch = tuple(self.block_out_channels)
        act = ACTIVATIONS[self.act_fn]
        eps, groups = self.norm_eps, self.norm_num_groups
        rkw = dict(eps=eps, act=self.act_fn, time_embedding_norm=self.resnet_time_scale_shift,
                   dropout=self.dropout)
        if self.center_input_sample:
            x = 2 * x - 1.0
        t = jnp.broadcast_to(jnp.asarray(timesteps).reshape(-1), (x.shape[0],))
        if self.time_embedding_type == "fourier":
            emb = GaussianFourierProjection(ch[0], name="time_proj")(t.astype(x.dtype))
        else:
            emb = timestep_embedding(t, ch[0], self.flip_sin_to_cos, self.freq_shift)
        emb = emb.astype(x.dtype)
        ted = self.time_embedding_dim or ch[0] * 4
        emb = TimestepEmbedding(ted, self.act_fn, name="time_embedding")(emb)
        if self.num_class_embeds:
            table = self.param("class_embedding_weight", nn.initializers.normal(1.0),
                               (self.num_class_embeds, ted), jnp.float32)
            y = jnp.zeros((x.shape[0],), jnp.int32) if class_labels is None else class_labels
            emb = emb + jnp.take(table, y, axis=0, mode="fill", fill_value=0).astype(emb.dtype)

        skip = x
        x = Conv2d(ch[0], 3, name="conv_in")(x)
        res = [x]
        out = ch[0]
        for i, kind in enumerate(self.down_block_types):
            cin, out = out, ch[i]
            final = i == len(ch) - 1
            name = f"down_blocks_{i}"
            attn = kind.startswith("Attn")
            for j in range(self.layers_per_block):
                c = cin if j == 0 else out
                if "Skip" in kind:
                    r = ResnetBlock2D(out, min(c // 4, 32), min(out // 4, 32),
                                      output_scale_factor=np.sqrt(2.0), name=f"{name}_resnets_{j}",
                                      **rkw)
                else:
                    r = ResnetBlock2D(out, self._groups(groups), name=f"{name}_resnets_{j}", **rkw)
                x = r(x, emb, train)
                if attn:
                    x = AttentionBlock(
                        _heads(out, self._head_dim(out)), 32 if "Skip" in kind else groups, eps,
                        np.sqrt(2.0) if "Skip" in kind else 1.0,
                        name=f"{name}_attentions_{j}")(x)
                res.append(x)
            if final:
                continue
            if "Skip" in kind:
                x = ResnetBlock2D(out, min(out // 4, 32), output_scale_factor=np.sqrt(2.0),
                                  down=True, use_in_shortcut=True, name=f"{name}_resnet_down",
                                  **rkw)(x, emb, train)
                skip = downsample_2d(skip, FIR)
                x = Conv2d(out, 1, name=f"{name}_skip_conv")(skip) + x
            else:
                p = self.downsample_padding
                if p == 0:
                    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
                x = Conv2d(out, 3, stride=2, padding=p, name=f"{name}_downsamplers_0_conv")(x)
            res.append(x)

        # mid
        c = ch[-1]
        mid_groups = groups if groups is not None else min(c // 4, 32)
        attn_groups = self.attn_norm_num_groups if self.attn_norm_num_groups is not None else (
            mid_groups if self.resnet_time_scale_shift == "default" else None)
        mkw = dict(rkw, output_scale_factor=self.mid_block_scale_factor)
        x = ResnetBlock2D(c, mid_groups, name="mid_block_resnets_0", **mkw)(x, emb, train)
        if self.add_attention:
            x = AttentionBlock(_heads(c, self._head_dim(c)), attn_groups, eps,
                               self.mid_block_scale_factor, name="mid_block_attentions_0")(x)
        x = ResnetBlock2D(c, mid_groups, name="mid_block_resnets_1", **mkw)(x, emb, train)

        # up
        rev = list(reversed(ch))
        out = rev[0]
        skip = None
        for i, kind in enumerate(self.up_block_types):
            prev, out = out, rev[i]
            cin = rev[min(i + 1, len(ch) - 1)]
            final = i == len(ch) - 1
            name = f"up_blocks_{i}"
            n = self.layers_per_block + 1
            for j in range(n):
                skip_ch = cin if j == n - 1 else out
                rin = prev if j == 0 else out
                x = jnp.concatenate([x, res.pop()], axis=-1)
                if kind == "SkipUpBlock2D":
                    g = min((rin + skip_ch) // 4, 32)
                elif kind == "AttnSkipUpBlock2D":
                    g = min(rin + skip_ch // 4, 32)
                else:
                    g = self._groups(groups)
                go = min(out // 4, 32) if "Skip" in kind else None
                sf = np.sqrt(2.0) if "Skip" in kind else 1.0
                x = ResnetBlock2D(out, g, go, output_scale_factor=sf,
                                  name=f"{name}_resnets_{j}", **rkw)(x, emb, train)
                if kind == "AttnUpBlock2D":
                    x = AttentionBlock(_heads(out, self._head_dim(out)), groups, eps,
                                       name=f"{name}_attentions_{j}")(x)
            if kind == "AttnSkipUpBlock2D":
                x = AttentionBlock(_heads(out, self._head_dim(out)), 32, eps, np.sqrt(2.0),
                                   name=f"{name}_attentions_0")(x)
            if "Skip" in kind:
                skip = 0.0 if skip is None else upsample_2d(skip, FIR)
                if not final:
                    g = min(out // 4, 32)
                    s = act(GroupNorm(g, eps, name=f"{name}_skip_norm")(x))
                    skip = skip + Conv2d(3, 3, name=f"{name}_skip_conv")(s)
                    x = ResnetBlock2D(out, g, g, output_scale_factor=np.sqrt(2.0), up=True,
                                      use_in_shortcut=True, name=f"{name}_resnet_up",
                                      **rkw)(x, emb, train)
            elif not final:
                x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
                x = Conv2d(out, 3, name=f"{name}_upsamplers_0_conv")(x)

        g_out = groups if groups is not None else min(ch[0] // 4, 32)
        x = act(GroupNorm(g_out, eps, name="conv_norm_out")(x))
        x = Conv2d(self.out_channels, 3, name="conv_out")(x)
        if skip is not None:
            x = x + skip
        if self.time_embedding_type == "fourier":
            x = x / t.astype(x.dtype)[:, None, None, None]
        return x

    def _groups(self, groups: Optional[int]) -> int:
        if groups is None:
            raise ValueError("norm_num_groups=None: diffusers' plain blocks need a group count")
        return groups

    def _head_dim(self, channels: int) -> int:
        return self.attention_head_dim if self.attention_head_dim is not None else channels


class TimestepEmbedding(nn.Module):
    """diffusers' ``TimestepEmbedding``: ``linear_2(act(linear_1(x)))``."""

    features: int
    act: str = "silu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = ACTIVATIONS[self.act](Linear(self.features, name="linear_1")(x))
        return Linear(self.features, name="linear_2")(x)
