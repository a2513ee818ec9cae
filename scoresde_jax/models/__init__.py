"""Score networks of the paper as flax.linen modules.

Modules (they take plain arguments, never the config; ``create_model(config)``, ``init_model``,
``param_shapes`` and ``dummy_inputs`` are in :mod:`scoresde_jax.config`):
  * ``MLP`` (``mlp.py``): a time-conditioned MLP for vector data ``(B, D)`` (2-D toy datasets).
  * ``NCSNpp`` (``unet.py``): NCSN++ and DDPM++, one configurable U-Net.
  * ``DDPM`` (``ddpm.py``): the DDPM U-Net.
  * ``NCSNv2`` (``ncsnv2.py``): the SMLD baseline (RefineNet), variants ``depth='64'|'128'|'256'``;
    with ``conditional=True`` it is NCSNv1 (``config.model.name='ncsn'``).
  * ``NoiseConditionalClassifier`` (``classifier.py``): time-dependent classifier for
    controllable generation.

``network.py`` (``ScoreNetwork``) holds the fields and the input / output scaling that NCSN++,
DDPM and NCSNv2 share; ``unet.py`` also holds the U-Net skeleton of NCSN++ and DDPM.

Layers: ``conv.py`` (``Conv``, ``Dense`` with flax's variables; ``Conv(fast_paths=False)`` is one
XLA convolution, as NCSN/NCSNv2 use it), ``cpu_conv_grad.py`` (the CPU kernel gradient behind
``Conv.fast_paths``), ``norm.py`` (``GroupNorm``), ``layers.py`` (DDPM / NCSN++ blocks),
``up_down.py`` (FIR resampling), ``ncsn_layers.py`` (NCSNv1/v2 blocks).

Usage::

    model = create_model(config)                        # reads config.model.* and config.data.*
    params = init_model(jax.random.key(0), config)      # float32 parameter pytree
    out = model.apply({'params': params}, x, labels, train=False)
    out = model.apply({'params': params}, x, labels, train=True, rngs={'dropout': key})

``x`` is NHWC; ``labels`` has shape ``(B,)``: sigma(t) for VE models with Fourier embeddings,
``(N-1) t`` (or integer steps / SMLD noise indices) for positional embeddings, DDPM and NCSNv2.

Precision and memory: ``create_model(config, dtype=jnp.bfloat16)`` computes in bfloat16 with
float32 parameters; ``remat=True`` rematerializes every residual block (``jax.checkpoint``). Both
can also be set in the config as ``config.model.dtype`` ('float32' | 'bfloat16') and
``config.model.remat``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from scoresde_jax.models.classifier import NoiseConditionalClassifier
from scoresde_jax.models.ddpm import DDPM
from scoresde_jax.models.mlp import MLP
from scoresde_jax.models.ncsnv2 import NCSNv2
from scoresde_jax.models.unet import NCSNpp

__all__ = [
    "NCSNpp", "DDPM", "NCSNv2", "MLP", "NoiseConditionalClassifier", "count_params",
    "uses_sigma_labels",
]


def uses_sigma_labels(model: nn.Module) -> bool:
    """True when the model's labels are noise levels sigma (NCSN++ with Fourier embeddings)."""
    return getattr(model, "embedding_type", None) == "fourier"


def count_params(tree: Any) -> int:
    """Total number of scalars in a pytree of arrays / ``ShapeDtypeStruct``."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        n = 1
        for s in leaf.shape:
            n *= int(s)
        total += n
    return total
