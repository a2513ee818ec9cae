"""The DDPM U-Net (Ho et al. 2020), the VP baseline of the paper (``config.model.name='ddpm'``).

``labels`` are time steps (``(N-1) t`` for continuous VP training, integer steps for discrete);
they enter through the sinusoidal embedding. With ``scale_by_sigma`` (SMLD training of the DDPM
network, ``configs/ve/cifar10_ddpm.py``) labels are SMLD noise indices and the output is divided by
``sigmas[labels]``. Parameter names equal the official flax auto-names.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax

from scoresde_jax.models import layers
from scoresde_jax.models.unet import UNet, conditioning_vector, unet


class DDPM(UNet):
    """DDPM score network ``(x: (B,H,W,C), labels: (B,)) -> (B,H,W,C)``.

    ``num_groups`` is the GroupNorm group count (32 in DDPM; smaller only for toy widths).
    ``dtype`` / ``remat`` as in ``NCSNpp``.
    """

    scale_by_sigma: bool = False
    num_groups: int = 32

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

        temb = conditioning_vector(self, layers.get_timestep_embedding(labels, nf), act,
                                   class_labels, train, x.shape[0])

        h = self.scale_input(x)

        def res(h, **kw):
            return resnet(**kw)(h, temb, train)

        def downsample(h):
            return layers.Downsample(with_conv=self.resamp_with_conv, dtype=dt)(h)

        def upsample(h, i_level):
            if i_level == 0:
                return h
            return layers.Upsample(with_conv=self.resamp_with_conv, dtype=dt)(h)

        h = unet(layers.conv3x3(h, nf, dtype=dt), widths=[nf * mult for mult in self.ch_mult],
                 num_res_blocks=self.num_res_blocks, res=res, attn=lambda h: attn()(h),
                 attn_resolutions=self.attn_resolutions, downsample=downsample, upsample=upsample)

        h = act(layers.group_norm(h, self.num_groups, dt))
        h = layers.conv3x3(h, x.shape[-1], init_scale=0.0, dtype=dt)
        return self.scale_output(h, labels, in_dtype)
