"""A small time-conditioned MLP score network for vector data ``x: (B, D)`` (2-D toy datasets).

``labels`` follow the U-Net's conventions: with ``embedding_type='positional'`` they are (continuous
or integer) time steps, e.g. ``(N-1) t`` for continuous VP / sub-VP training, embedded with
:func:`layers.get_timestep_embedding`; with ``embedding_type='fourier'`` they are noise levels
sigma(t) (VE), embedded as ``GaussianFourierProjection(log sigma)``.

Architecture: ``temb = Dense(act(Dense(emb(labels))))``; ``h = Dense(x)``; for every hidden size
``h = act(Dense(h) + Dense(temb))``; output ``Dense(D)(h)`` (same shape as ``x``).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models import layers
from scoresde_jax.models.conditioning import add_class_embedding

EMBEDDINGS = ("fourier", "positional")


class MLP(nn.Module):
    """Time-conditioned MLP: ``(x (B, D), labels (B,)) -> (B, D)``."""

    hidden_sizes: Sequence[int] = (128, 128, 128)
    embedding_type: str = "positional"
    embedding_dim: int = 64
    fourier_scale: float = 16.0
    nonlinearity: str = "swish"
    dropout: float = 0.0
    num_classes: int = 0
    class_dropout: float = 0.0
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False,
                 class_labels: Optional[jax.Array] = None) -> jax.Array:
        embedding_type = self.embedding_type.lower()
        if embedding_type not in EMBEDDINGS:
            raise ValueError(f"MLP embedding_type={self.embedding_type!r} not in {EMBEDDINGS}")
        if x.ndim != 2:
            raise ValueError(f"MLP takes vector data x of shape (B, D), got {x.shape}; "
                             "use an image model (ncsnpp, ddpm, ...) for images")
        if labels.shape != (x.shape[0],):
            raise ValueError(f"labels must have shape (B,)={(x.shape[0],)}, got {labels.shape}")
        act = layers.get_act(self.nonlinearity)
        dt = self.dtype
        in_dtype = x.dtype
        if embedding_type == "fourier":
            temb = layers.GaussianFourierProjection(
                embedding_size=self.embedding_dim // 2, scale=self.fourier_scale)(
                    jnp.log(labels.astype(in_dtype)))
        else:
            temb = layers.get_timestep_embedding(labels, self.embedding_dim)
        temb = temb.astype(in_dtype)
        width = int(self.hidden_sizes[0]) if len(self.hidden_sizes) else self.embedding_dim
        temb = layers.Dense(width, dtype=dt, name="temb_0")(temb)
        temb = layers.Dense(width, dtype=dt, name="temb_1")(act(temb))
        temb = add_class_embedding(self, temb, class_labels, num_classes=self.num_classes,
                                   class_dropout=self.class_dropout, train=train,
                                   batch=x.shape[0])
        temb = act(temb)
        h = layers.Dense(width, dtype=dt, name="input")(x)
        for i, size in enumerate(self.hidden_sizes):
            h = layers.Dense(int(size), dtype=dt, name=f"hidden_{i}")(h)
            h = act(h + layers.Dense(int(size), dtype=dt, name=f"temb_proj_{i}")(temb))
            if self.dropout > 0:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
        out = layers.Dense(x.shape[-1], dtype=dt, name="output")(h)
        return out.astype(in_dtype)
