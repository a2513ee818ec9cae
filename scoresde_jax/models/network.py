"""What the image score networks (NCSN++ / DDPM++, DDPM, NCSNv2 / NCSN) share: the fields that
scale their input and output, and the two steps that use them.

* Input: data in ``[0, 1]`` are mapped to ``[-1, 1]`` unless ``centered``, then cast to the
  computation ``dtype`` (parameters stay float32).
* Output: cast back to the input's dtype and, with ``scale_by_sigma``, divided by the noise level
  of each example; for SMLD noise indices ``labels`` that is ``sigmas[labels]`` on the geometric
  grid of ``(sigma_min, sigma_max, num_scales)`` (index 0 = ``sigma_max``).

``remat`` rematerializes every residual block (``jax.checkpoint``); the networks apply it.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models.layers import geometric_sigmas

__all__ = ["ScoreNetwork"]


class ScoreNetwork(nn.Module):
    """Base of the image score networks ``(x: (B,H,W,C), labels: (B,)) -> (B,H,W,C)``: their
    common fields and :meth:`scale_input` / :meth:`scale_output` (module docstring)."""

    nf: int = 128
    nonlinearity: str = "swish"
    centered: bool = False
    scale_by_sigma: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    num_scales: int = 1000
    dtype: Optional[Any] = None
    remat: bool = False

    def scale_input(self, x: jax.Array) -> jax.Array:
        """``x`` (``2 x - 1`` unless ``centered``) in the computation dtype."""
        if not self.centered:
            x = 2 * x - 1.0
        if self.dtype is not None:
            x = x.astype(self.dtype)
        return x

    def sigma_of_labels(self, labels: jax.Array) -> jax.Array:
        """The noise levels ``sigmas[labels]`` of SMLD noise indices ``labels``, shape ``(B,)``."""
        sigmas = geometric_sigmas(self.sigma_min, self.sigma_max, self.num_scales)
        return sigmas[labels.astype(jnp.int32)]

    def scale_output(self, h: jax.Array, labels: jax.Array, in_dtype: Any,
                     sigmas: Optional[jax.Array] = None) -> jax.Array:
        """``h`` in ``in_dtype``, with ``scale_by_sigma`` divided per example by ``sigmas`` (default
        :meth:`sigma_of_labels` of ``labels``)."""
        h = h.astype(in_dtype)
        if self.scale_by_sigma:
            sigmas = self.sigma_of_labels(labels) if sigmas is None else sigmas
            h = h / sigmas.astype(in_dtype).reshape((-1,) + (1,) * (h.ndim - 1))
        return h
