"""NCSN++ / DDPM++: one configurable U-Net (Song et al. 2021, appendix H; EDM's ``SongUNet``).

NCSN++ (VE, CIFAR-10): ``resblock_type='biggan'``, ``fir=True``, ``progressive_input='residual'``,
``embedding_type='fourier'``, ``scale_by_sigma=True``. DDPM++ (VP): ``fir=False``,
``progressive_input='none'``, ``embedding_type='positional'``, ``scale_by_sigma=False``.

Conditioning (as in the official code):
  * ``embedding_type='fourier'``: ``labels`` are noise levels sigma(t); the embedding is
    ``GaussianFourierProjection(log sigma)``; ``scale_by_sigma`` divides the output by sigma.
  * ``embedding_type='positional'``: ``labels`` are (continuous or integer) time steps
    (``(N-1) t`` for VP, the SMLD noise index for discrete VE); with ``scale_by_sigma`` the output
    is divided by ``sigmas[labels]`` with ``sigmas = geometric_sigmas(sigma_min, sigma_max, N)``.
  * ``num_classes > 0``: ``class_labels`` (B,) add a label embedding to the time embedding
    (:mod:`scoresde_jax.models.conditioning`; the null class ``num_classes``, ``class_dropout``).
Inputs are NHWC; if not ``centered`` the input is mapped from [0, 1] to [-1, 1] first.

Parameter names equal the official flax auto-names, so official checkpoints load one to one.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax.models import layers
from scoresde_jax.models.conditioning import add_class_embedding
from scoresde_jax.models.network import ScoreNetwork

PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
COMBINE = ("sum", "cat")
EMBEDDINGS = ("fourier", "positional")
RESBLOCKS = ("ddpm", "biggan")


Block = Callable[..., jax.Array]


def unet_encoder(h: jax.Array, *, widths: Sequence[int], num_res_blocks: int, res: Block,
                 attn: Block, attn_resolutions: Sequence[int], downsample: Block
                 ) -> list[jax.Array]:
    """The U-Net downsampling path shared by NCSN++/DDPM++ and DDPM; returns the skip list.

    Per level ``i``: ``num_res_blocks`` x ``res(h, out_ch=widths[i])`` (+ ``attn`` where the
    resolution is in ``attn_resolutions``), each output kept as a skip; then, except at the last
    level, ``downsample(h)`` (the model's hook: a resampling layer or block, input pyramid).
    Sub-modules are created in the caller's scope, so their names are the caller's auto-names.
    """
    hs = [h]
    for i_level, width in enumerate(widths):
        for _ in range(num_res_blocks):
            h = res(hs[-1], out_ch=width)
            if h.shape[1] in attn_resolutions:
                h = attn(h)
            hs.append(h)
        if i_level != len(widths) - 1:
            hs.append(downsample(hs[-1]))
    return hs


def unet_decoder(h: jax.Array, hs: list[jax.Array], *, widths: Sequence[int],
                 num_res_blocks: int, res: Block, attn: Block, attn_resolutions: Sequence[int],
                 upsample: Callable[[jax.Array, int], jax.Array]) -> jax.Array:
    """The U-Net upsampling path: consumes the skips ``hs`` of :func:`unet_encoder`.

    Per level ``i`` from the deepest: ``num_res_blocks + 1`` x ``res(concat(h, skip),
    out_ch=widths[i])``, ``attn`` at ``attn_resolutions``, then ``upsample(h, i)`` (the model's
    hook: output pyramid, and resampling unless ``i == 0``).
    """
    for i_level in reversed(range(len(widths))):
        for _ in range(num_res_blocks + 1):
            h = res(jnp.concatenate([h, hs.pop()], axis=-1), out_ch=widths[i_level])
        if h.shape[1] in attn_resolutions:
            h = attn(h)
        h = upsample(h, i_level)
    if hs:
        raise AssertionError(f"unet_decoder: {len(hs)} skip connections left unused")
    return h


def unet(h: jax.Array, *, widths: Sequence[int], num_res_blocks: int, res: Block, attn: Block,
         attn_resolutions: Sequence[int], downsample: Block,
         upsample: Callable[[jax.Array, int], jax.Array]) -> jax.Array:
    """The U-Net of NCSN++/DDPM++ and DDPM from its first convolution's output ``h`` to the last
    decoder level: :func:`unet_encoder`, the middle ``res``-``attn``-``res``, :func:`unet_decoder`
    (arguments as theirs; the layers are the caller's)."""
    loop = dict(widths=widths, num_res_blocks=num_res_blocks, res=res, attn=attn,
                attn_resolutions=attn_resolutions)
    hs = unet_encoder(h, downsample=downsample, **loop)
    h = attn(res(hs[-1]))
    h = res(h)
    return unet_decoder(h, hs, upsample=upsample, **loop)


class UNet(ScoreNetwork):
    """The fields of the U-Nets (:class:`NCSNpp`, :class:`~scoresde_jax.models.ddpm.DDPM`): widths
    ``nf * ch_mult`` per resolution, ``num_res_blocks`` per level, attention at
    ``attn_resolutions``, resampling with convolutions, a time embedding when ``conditional``, and
    ``num_classes`` class labels with ``class_dropout``
    (:mod:`~scoresde_jax.models.conditioning`)."""

    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    conditional: bool = True
    num_classes: int = 0
    class_dropout: float = 0.0


def conditioning_vector(net: UNet, temb: jax.Array, act: Callable[[jax.Array], jax.Array],
                        class_labels: Optional[jax.Array], train: bool,
                        batch: int) -> Optional[jax.Array]:
    """The vector that conditions a U-Net's residual blocks: ``Dense(4 nf)(act(Dense(4 nf)(temb)))``
    of the noise-level embedding ``temb`` when ``net.conditional`` (else none), plus the class
    embedding of ``class_labels`` (:func:`~scoresde_jax.models.conditioning.add_class_embedding`).
    Call it in ``net``'s compact ``__call__``: the layers are ``net``'s (``Dense_0``,
    ``Dense_1``)."""
    if net.conditional:
        temb = layers.Dense(net.nf * 4, kernel_init=layers.default_init(), dtype=net.dtype)(temb)
        temb = layers.Dense(net.nf * 4, kernel_init=layers.default_init(), dtype=net.dtype)(
            act(temb))
    else:
        temb = None
    return add_class_embedding(net, temb, class_labels, num_classes=net.num_classes,
                               class_dropout=net.class_dropout, train=train, batch=batch)


class NCSNpp(UNet):
    """The NCSN++ / DDPM++ score network ``(x: (B,H,W,C), labels: (B,)) -> (B,H,W,C)``.

    Attributes mirror the official ``config.model`` keys. ``dtype``: computation dtype (e.g.
    ``jnp.bfloat16``; parameters stay float32). ``remat``: rematerialize each residual block
    (``jax.checkpoint``) to trade compute for activation memory.
    """

    num_res_blocks: int = 4
    fir: bool = True
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "residual"
    progressive_combine: str = "sum"
    embedding_type: str = "fourier"
    fourier_scale: float = 16.0
    init_scale: float = 0.0

    def _check(self) -> None:
        for name, value, allowed in (("resblock_type", self.resblock_type, RESBLOCKS),
                                     ("progressive", self.progressive, PROGRESSIVE),
                                     ("progressive_input", self.progressive_input,
                                      PROGRESSIVE_INPUT),
                                     ("progressive_combine", self.progressive_combine, COMBINE),
                                     ("embedding_type", self.embedding_type, EMBEDDINGS)):
            if value.lower() not in allowed:
                raise ValueError(f"NCSNpp: {name}={value!r} is not one of {allowed}")

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array, train: bool = False,
                 class_labels: Optional[jax.Array] = None) -> jax.Array:
        self._check()
        layers.check_inputs("NCSNpp", x, labels)
        act = layers.get_act(self.nonlinearity)
        nf, dt = self.nf, self.dtype
        num_resolutions = len(self.ch_mult)
        resblock_type = self.resblock_type.lower()
        progressive = self.progressive.lower()
        progressive_input = self.progressive_input.lower()
        combine_method = self.progressive_combine.lower()
        embedding_type = self.embedding_type.lower()
        in_dtype = x.dtype
        out_ch_img = x.shape[-1]

        # Time / noise-level embedding.
        if embedding_type == "fourier":
            used_sigmas = labels
            temb = layers.GaussianFourierProjection(embedding_size=nf, scale=self.fourier_scale)(
                jnp.log(labels))
        else:
            used_sigmas = self.sigma_of_labels(labels)
            temb = layers.get_timestep_embedding(labels, nf)
        temb = conditioning_vector(self, temb, act, class_labels, train, x.shape[0])

        # Residual blocks get explicit official names (so remat does not rename them).
        counters: dict[str, int] = {}

        def block(cls, **kw):
            name = cls.__name__
            idx = counters.get(name, 0)
            counters[name] = idx + 1
            target = nn.remat(cls, static_argnums=(3,)) if self.remat else cls
            return target(name=f"{name}_{idx}", **kw)

        def resnet(**kw):
            if resblock_type == "ddpm":
                return block(layers.ResnetBlockDDPMpp, act=act, dropout=self.dropout,
                             init_scale=self.init_scale, skip_rescale=self.skip_rescale,
                             dtype=dt, **kw)
            return block(layers.ResnetBlockBigGANpp, act=act, dropout=self.dropout, fir=self.fir,
                         fir_kernel=tuple(self.fir_kernel), init_scale=self.init_scale,
                         skip_rescale=self.skip_rescale, dtype=dt, **kw)

        def attn():
            return layers.AttnBlockpp(init_scale=self.init_scale, skip_rescale=self.skip_rescale,
                                      dtype=dt)

        def rescaled_sum(a, b):
            return (a + b) / np.sqrt(2.0) if self.skip_rescale else a + b

        fir_kernel = tuple(self.fir_kernel)
        x = self.scale_input(x)

        def res(h, **kw):
            return resnet(**kw)(h, temb, train)

        def attn_apply(h):
            return attn()(h)

        widths = [nf * mult for mult in self.ch_mult]
        input_pyramid = x if progressive_input != "none" else None

        def downsample(h):
            nonlocal input_pyramid
            if resblock_type == "ddpm":
                h = layers.Downsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                      fir_kernel=fir_kernel, dtype=dt)(h)
            else:
                h = resnet(down=True)(h, temb, train)
            if progressive_input == "input_skip":
                pyramid_down = layers.Downsample(with_conv=False, fir=self.fir,
                                                 fir_kernel=fir_kernel, dtype=dt)
                input_pyramid = pyramid_down(input_pyramid)
                h = layers.Combine(method=combine_method, dtype=dt)(input_pyramid, h)
            elif progressive_input == "residual":
                input_pyramid = layers.Downsample(out_ch=h.shape[-1], with_conv=True,
                                                  fir=self.fir, fir_kernel=fir_kernel,
                                                  dtype=dt)(input_pyramid)
                input_pyramid = rescaled_sum(input_pyramid, h)
                h = input_pyramid
            return h

        pyramid = None

        def upsample(h, i_level):
            nonlocal pyramid
            if progressive != "none":
                if i_level == num_resolutions - 1:
                    if progressive == "output_skip":
                        pyramid = layers.conv3x3(act(layers.group_norm(h, dtype=dt)), out_ch_img,
                                                 init_scale=self.init_scale, dtype=dt)
                    else:
                        pyramid = layers.conv3x3(act(layers.group_norm(h, dtype=dt)), h.shape[-1],
                                                 dtype=dt)
                else:
                    if progressive == "output_skip":
                        pyramid = layers.Upsample(with_conv=False, fir=self.fir,
                                                  fir_kernel=fir_kernel, dtype=dt)(pyramid)
                        pyramid = pyramid + layers.conv3x3(
                            act(layers.group_norm(h, dtype=dt)), out_ch_img,
                            init_scale=self.init_scale, dtype=dt)
                    else:
                        pyramid = layers.Upsample(out_ch=h.shape[-1], with_conv=True,
                                                  fir=self.fir, fir_kernel=fir_kernel,
                                                  dtype=dt)(pyramid)
                        pyramid = rescaled_sum(pyramid, h)
                        h = pyramid
            if i_level != 0:
                if resblock_type == "ddpm":
                    h = layers.Upsample(with_conv=self.resamp_with_conv, fir=self.fir,
                                        fir_kernel=fir_kernel, dtype=dt)(h)
                else:
                    h = resnet(up=True)(h, temb, train)
            return h

        h = unet(layers.conv3x3(x, nf, dtype=dt), widths=widths,
                 num_res_blocks=self.num_res_blocks, res=res, attn=attn_apply,
                 attn_resolutions=self.attn_resolutions, downsample=downsample, upsample=upsample)

        if progressive == "output_skip":
            h = pyramid
        else:
            h = act(layers.group_norm(h, dtype=dt))
            h = layers.conv3x3(h, out_ch_img, init_scale=self.init_scale, dtype=dt)

        return self.scale_output(h, labels, in_dtype, used_sigmas)
