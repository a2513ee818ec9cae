"""scoresde_jax: score-based generative modeling through SDEs (Song et al., ICLR 2021) in JAX/Flax.

Import the parts you use (``from scoresde_jax import sde, losses, samplers, likelihood``);
``import scoresde_jax`` itself loads nothing else, so it stays cheap. The layout is in
CONTRIBUTING.md; the official score_sde names that read a config live in
:mod:`scoresde_jax.config`.
"""

from __future__ import annotations

__version__ = "0.1.0"
