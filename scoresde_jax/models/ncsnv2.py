"""NCSNv2 (Song & Ermon 2020): RefineNet of the SMLD baseline (``config.model.name='ncsnv2_*'``).

A dilated ResNet encoder and RefineNet decoder. ``labels`` are SMLD noise indices (integers,
index 0 = sigma_max); with ``scale_by_sigma`` the output is divided by ``sigmas[labels]``, the
network itself is not conditioned on the noise level (NCSNv2 technique 3).

``depth`` picks the official variant: ``'64'`` (images < 96 px), ``'128'`` (96..128 px),
``'256'`` (up to 256 px). ``conditional=True`` is NCSNv1 (Song & Ermon 2019,
``config.model.name='ncsn'``): the same network with noise-conditional InstanceNorm++ everywhere.
Parameter names equal the official flax auto-names (``ResidualBlock_k``, ``RefineBlock_k``,
``ConditionalResidualBlock_k``, ``CondRefineBlock_k``, ...).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models import layers
from scoresde_jax.models.ncsn_layers import (
    NORMALIZATIONS,
    ConditionalInstanceNorm2dPlus,
    ConditionalResidualBlock,
    CondRefineBlock,
    RefineBlock,
    ResidualBlock,
    apply_norm,
    ncsn_conv,
)
from scoresde_jax.models.network import ScoreNetwork


# Encoder plans: (multiplier of nf, resample, dilation) per block after the first conv.
_PLANS = {
    "64": [(1, None, 1), (1, None, 1), (2, "down", 1), (2, None, 1), (2, "down", 2),
           (2, None, 2), (2, "down", 4), (2, None, 4)],
    "128": [(1, None, 1), (1, None, 1), (2, "down", 1), (2, None, 1), (2, "down", 1),
            (2, None, 1), (4, "down", 2), (4, None, 2), (4, "down", 4), (4, None, 4)],
    "256": [(1, None, 1), (1, None, 1), (2, "down", 1), (2, None, 1), (2, "down", 1),
            (2, None, 1), (2, "down", 1), (2, None, 1), (4, "down", 2), (4, None, 2),
            (4, "down", 4), (4, None, 4)],
}
# Decoder widths (multiples of nf) from the deepest RefineBlock to the shallowest.
_REFINE = {"64": (2, 2, 2, 1), "128": (4, 2, 2, 1, 1), "256": (4, 2, 2, 2, 1, 1)}


class NCSNv2(ScoreNetwork):
    """NCSNv2 score network ``(x: (B,H,W,C), labels: (B,) int) -> (B,H,W,C)``.

    ``conditional=True`` gives NCSNv1 (``config.model.name='ncsn'``): every normalization is the
    noise-conditional InstanceNorm++ with one embedding row per noise level (``num_scales``).
    """

    nonlinearity: str = "elu"
    depth: str = "64"
    conditional: bool = False
    normalization: str = "InstanceNorm++"
    interpolation: str = "bilinear"

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False) -> jax.Array:
        if self.depth not in _PLANS:
            raise ValueError(f"NCSNv2 depth {self.depth!r} not in {sorted(_PLANS)}")
        layers.check_inputs("NCSNv2", x, labels)
        if self.conditional:
            if self.normalization != "InstanceNorm++":
                raise ValueError("the noise-conditional NCSN (v1) supports normalization "
                                 f"'InstanceNorm++' only, got {self.normalization!r}")
            norm = functools.partial(ConditionalInstanceNorm2dPlus, num_classes=self.num_scales,
                                     dtype=self.dtype)
        elif self.normalization == "GroupNorm":
            norm = functools.partial(nn.GroupNorm, num_groups=32, dtype=self.dtype)
        elif self.normalization in NORMALIZATIONS:
            norm = functools.partial(NORMALIZATIONS[self.normalization], dtype=self.dtype)
        else:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose from "
                             f"{sorted(NORMALIZATIONS) + ['GroupNorm']}")
        act = layers.get_act(self.nonlinearity)
        nf, dt = self.nf, self.dtype
        in_dtype = x.dtype
        y = labels.astype(jnp.int32) if self.conditional else None
        res_base = ConditionalResidualBlock if self.conditional else ResidualBlock
        res_cls = nn.remat(res_base) if self.remat else res_base
        refine_cls = CondRefineBlock if self.conditional else RefineBlock
        refine_kw = dict(normalizer=norm) if self.conditional else {}

        h = self.scale_input(x)
        h = ncsn_conv(h, nf, dtype=dt)
        skips = []
        for i, (mult, resample, dilation) in enumerate(_PLANS[self.depth]):
            h = res_cls(mult * nf, normalization=norm, resample=resample, act=act,
                        dilation=dilation, dtype=dt, name=f"{res_base.__name__}_{i}")(h, y)
            if resample is None and i % 2 == 1:
                skips.append(h)
        widths = _REFINE[self.depth]
        ref = None
        for j, (skip, width) in enumerate(zip(reversed(skips), widths)):
            inputs = [skip] if ref is None else [skip, ref]
            ref = refine_cls(skip.shape[1:3], width * nf, act=act,
                             interpolation=self.interpolation, start=ref is None,
                             end=j == len(widths) - 1, dtype=dt, **refine_kw)(inputs, y)
        h = act(apply_norm(norm, ref, y))
        h = ncsn_conv(h, x.shape[-1], dtype=dt)
        return self.scale_output(h, labels, in_dtype)
