"""The DDPM U-Net (Ho et al. 2020), the VP baseline of the paper (``config.model.name='ddpm'``).

``labels`` are time steps (``(N-1) t`` for continuous VP training, integer steps for discrete);
they enter through the sinusoidal embedding. With ``scale_by_sigma`` (SMLD training of the DDPM
network, ``configs/ve/cifar10_ddpm.py``) labels are SMLD noise indices and the output is divided by
``sigmas[labels]``. Parameter names equal the official flax auto-names.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models import layers
from scoresde_jax.models.conditioning import add_class_embedding
from scoresde_jax.models.unet import unet_decoder, unet_encoder


class DDPM(nn.Module):
    """DDPM score network ``(x: (B,H,W,C), labels: (B,)) -> (B,H,W,C)``.

    ``num_groups`` is the GroupNorm group count (32 in DDPM; smaller only for toy widths).
    ``dtype`` / ``remat`` as in ``NCSNpp``.
    """

    nf: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    nonlinearity: str = "swish"
    centered: bool = False
    scale_by_sigma: bool = False
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    num_groups: int = 32
    num_classes: int = 0
    class_dropout: float = 0.0
    dtype: Optional[Any] = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False,
                 class_labels: Optional[jax.Array] = None) -> jax.Array:
        layers.check_inputs("DDPM", x, labels)
        act = layers.get_act(self.nonlinearity)
        nf, dt = self.nf, self.dtype
        in_dtype = x.dtype
        counters: dict[str, int] = {}

        def resnet(**kw):
            idx = counters.get("r", 0)
            counters["r"] = idx + 1
            cls = layers.ResnetBlockDDPM
            target = nn.remat(cls, static_argnums=(3,)) if self.remat else cls
            return target(act=act, dropout=self.dropout, num_groups=self.num_groups, dtype=dt,
                          name=f"ResnetBlockDDPM_{idx}", **kw)

        def attn():
            return layers.AttnBlock(num_groups=self.num_groups, dtype=dt)

        if self.conditional:
            temb = layers.get_timestep_embedding(labels, nf)
            temb = layers.Dense(nf * 4, kernel_init=layers.default_init(), dtype=dt)(temb)
            temb = layers.Dense(nf * 4, kernel_init=layers.default_init(), dtype=dt)(act(temb))
        else:
            temb = None
        temb = add_class_embedding(self, temb, class_labels, num_classes=self.num_classes,
                                   class_dropout=self.class_dropout, train=train,
                                   batch=x.shape[0])

        h = x if self.centered else 2 * x - 1.0
        if dt is not None:
            h = h.astype(dt)

        def res(h, **kw):
            return resnet(**kw)(h, temb, train)

        def downsample(h):
            return layers.Downsample(with_conv=self.resamp_with_conv, dtype=dt)(h)

        def upsample(h, i_level):
            if i_level == 0:
                return h
            return layers.Upsample(with_conv=self.resamp_with_conv, dtype=dt)(h)

        loop = dict(widths=[nf * mult for mult in self.ch_mult],
                    num_res_blocks=self.num_res_blocks, res=res, attn=lambda h: attn()(h),
                    attn_resolutions=self.attn_resolutions)
        hs = unet_encoder(layers.conv3x3(h, nf, dtype=dt), downsample=downsample, **loop)
        h = hs[-1]
        h = resnet()(h, temb, train)
        h = attn()(h)
        h = resnet()(h, temb, train)
        h = unet_decoder(h, hs, upsample=upsample, **loop)

        h = act(layers.group_norm(h, self.num_groups, dt))
        h = layers.conv3x3(h, x.shape[-1], init_scale=0.0, dtype=dt)
        h = h.astype(in_dtype)
        if self.scale_by_sigma:
            sigmas = layers.geometric_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
            used = sigmas[labels.astype(jnp.int32)].astype(in_dtype)
            h = h / used.reshape((-1,) + (1,) * (h.ndim - 1))
        return h
