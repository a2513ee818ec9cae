"""Class conditioning of the score networks: a label embedding added to the time embedding.

As EDM's ``SongUNet`` and ADM: ``temb <- temb + E[y]`` with a learned table ``E`` of
``num_classes + 1`` rows, the last row (index ``num_classes``) the *null class* of classifier-free
guidance. ``class_labels=None`` means the null class for every example. With ``class_dropout`` > 0
a training call replaces each label by the null class with that probability (the ``'dropout'``
RNG stream), so one network learns the conditional and the unconditional score (Ho & Salimans
2022). ``num_classes = 0`` adds nothing: unconditional networks keep their parameters exactly.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp


def check_class_options(name: str, num_classes: int, class_dropout: float) -> None:
    """Raise a ValueError naming the network for a negative class count or a dropout outside
    ``[0, 1)``."""
    if int(num_classes) < 0:
        raise ValueError(f"{name}: num_classes={num_classes} must be >= 0 (0 = unconditional).")
    if not 0.0 <= float(class_dropout) < 1.0:
        raise ValueError(f"{name}: class_dropout={class_dropout} must be in [0, 1).")
    if class_dropout and not num_classes:
        raise ValueError(f"{name}: class_dropout needs a class-conditional model; set "
                         "model.num_classes > 0 or model.class_dropout = 0.")


def add_class_embedding(module: nn.Module, temb: Optional[jax.Array],
                        class_labels: Optional[jax.Array], *, num_classes: int,
                        class_dropout: float, train: bool, batch: int) -> Optional[jax.Array]:
    """``temb + Embed(num_classes + 1, width)(y)`` inside ``module``'s compact call (parameter
    ``class_embed/embedding``); ``temb`` unchanged when ``num_classes == 0``."""
    name = type(module).__name__
    check_class_options(name, num_classes, class_dropout)
    if not num_classes:
        if class_labels is not None:
            raise ValueError(f"{name} is unconditional (num_classes=0) but got class_labels; set "
                             "model.num_classes to train a class-conditional model.")
        return temb
    if temb is None:
        raise ValueError(f"{name}: class conditioning needs the time embedding (conditional=True).")
    if class_labels is None:
        y = jnp.full((batch,), num_classes, jnp.int32)
    else:
        y = jnp.asarray(class_labels)
        if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
            raise ValueError(f"{name}: class_labels must be integers of shape ({batch},), got "
                             f"{y.dtype} {y.shape}; the null class is {num_classes}.")
        y = y.astype(jnp.int32)
    if train and class_dropout > 0:
        drop = jax.random.bernoulli(module.make_rng("dropout"), class_dropout, (batch,))
        y = jnp.where(drop, num_classes, y)
    emb = nn.Embed(num_classes + 1, temb.shape[-1], name="class_embed")(y)
    return temb + emb.astype(temb.dtype)
