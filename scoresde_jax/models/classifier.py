"""A small time-dependent (noise-conditional) classifier for class-conditional sampling.

Paper section 5 / appendix I: sample from p_t(x | y) with ``score + grad_x log p_t(y | x)``; the
classifier therefore has to work on noisy inputs and knows the noise level. This is the encoder half
of the NCSN++ U-Net (BigGAN residual blocks with a time embedding), global average pooling and a
linear head: ``(x: (B,H,W,C), labels: (B,)) -> logits (B, num_classes)``.

``labels`` follow the score network's convention: VE noise levels sigma(t) with
``embedding_type='fourier'`` (as the official ``wideresnet_noise_conditional`` classifier, which
takes ``ve_noise_scale``), or time steps with ``'positional'``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models import layers


class NoiseConditionalClassifier(nn.Module):
    """Noise-conditional image classifier (a configurable U-Net encoder).

    Defaults (nf=32, ch_mult=(1, 2, 2), one block per level) give ~0.4 M parameters for
    32x32x3 inputs; raise ``nf`` / ``num_res_blocks`` for a stronger classifier.
    """

    num_classes: int = 10
    nf: int = 32
    ch_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    dropout: float = 0.0
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    nonlinearity: str = "swish"
    centered: bool = True
    dtype: Optional[Any] = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        layers.check_inputs("classifier", x, labels)
        act = layers.get_act(self.nonlinearity)
        nf, dt = self.nf, self.dtype
        if self.embedding_type == "fourier":
            temb = layers.GaussianFourierProjection(embedding_size=nf, scale=self.fourier_scale)(
                jnp.log(labels))
        elif self.embedding_type == "positional":
            temb = layers.get_timestep_embedding(labels, nf)
        else:
            raise ValueError(f"embedding_type {self.embedding_type!r} not in ('fourier', "
                             "'positional')")
        temb = layers.Dense(nf * 4, kernel_init=layers.default_init(), dtype=dt)(temb)
        temb = layers.Dense(nf * 4, kernel_init=layers.default_init(), dtype=dt)(act(temb))

        cls = layers.ResnetBlockBigGANpp
        block = nn.remat(cls, static_argnums=(3,)) if self.remat else cls
        h = x if self.centered else 2 * x - 1.0
        if dt is not None:
            h = h.astype(dt)
        h = layers.conv3x3(h, nf, dtype=dt)
        idx = 0
        for i_level, mult in enumerate(self.ch_mult):
            for _ in range(self.num_res_blocks):
                h = block(act=act, out_ch=nf * mult, dropout=self.dropout, init_scale=0.0,
                          dtype=dt, name=f"ResnetBlockBigGANpp_{idx}")(h, temb, train)
                idx += 1
            if i_level != len(self.ch_mult) - 1:
                h = block(act=act, down=True, dropout=self.dropout, init_scale=0.0, dtype=dt,
                          name=f"ResnetBlockBigGANpp_{idx}")(h, temb, train)
                idx += 1
        h = act(layers.group_norm(h, dtype=dt))
        h = jnp.mean(h, axis=(1, 2))
        logits = layers.Dense(self.num_classes, kernel_init=layers.default_init(), dtype=dt)(h)
        return logits.astype(x.dtype)
