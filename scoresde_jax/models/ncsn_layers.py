"""NCSN layers (Song & Ermon 2019, 2020): normalizations and RefineNet blocks of NCSNv1/v2.

* Normalizations: :class:`InstanceNorm2dPlus` (InstanceNorm++,
  ``gamma ((x - mu_c) / s_c + alpha (mu_c - m) / v) + beta``), its noise-conditional
  :class:`ConditionalInstanceNorm2dPlus` (NCSNv1), :class:`InstanceNorm2d`,
  :class:`VarianceNorm2d`.
* Blocks: :class:`ResidualBlock` (dilated ResNet encoder), and the RefineNet decoder's
  :class:`RCUBlock`, :class:`MSFBlock`, :class:`CRPBlock`, :class:`RefineBlock`, each with its
  NCSNv1 (``Cond*``) name. Class names are the official flax auto-names that checkpoint conversion
  relies on; :mod:`scoresde_jax.models.ncsnv2` assembles them into the networks.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from scoresde_jax.models.conv import Conv

Act = Callable[[jax.Array], jax.Array]


def _one_plus_normal(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def ncsn_conv(x: jax.Array, out_ch: int, *, kernel: int = 3, stride: int = 1, bias: bool = True,
              dilation: int = 1, init_scale: float = 1.0, dtype: Optional[Any] = None) -> jax.Array:
    """Convolution with PyTorch's default init (as NCSNv1/v2), named ``Conv_k`` in the caller.

    One ``lax.conv_general_dilated`` (``Conv(fast_paths=False)``), as the official flax code.
    """
    init_scale = 1e-10 if init_scale == 0 else init_scale
    kernel_init = nn.initializers.variance_scaling(init_scale / 3, "fan_in", "uniform")
    kshape = (kernel, kernel, x.shape[-1], out_ch)

    def bias_init(key, shape, dtype=jnp.float32):
        return kernel_init(key, kshape, dtype)[0, 0, 0, :]

    return Conv(out_ch, kernel, stride, dilation, use_bias=bias, kernel_init=kernel_init,
                bias_init=bias_init, dtype=dtype, fast_paths=False)(x)


def _instance_norm_plus_parts(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """InstanceNorm++ statistics: ``(x - mu_c) / s_c`` and ``(mu_c - m) / v`` (broadcastable).

    ``mu_c, s_c``: per-channel spatial mean and std; ``m, v``: mean and std of the ``mu_c``.
    Computed in at least float32.
    """
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    means = jnp.mean(xf, axis=(1, 2))
    m = jnp.mean(means, axis=-1, keepdims=True)
    v = jnp.var(means, axis=-1, keepdims=True)
    means_plus = (means - m) / jnp.sqrt(v + 1e-5)
    std = jnp.sqrt(jnp.var(xf, axis=(1, 2), keepdims=True) + 1e-5)
    return (xf - means[:, None, None, :]) / std, means_plus[:, None, None, :]


class InstanceNorm2dPlus(nn.Module):
    """InstanceNorm++: instance norm plus a learned correction by the normalized channel means.

    ``h = gamma * ((x - mu_c) / s_c + alpha * (mu_c - m) / v) + beta`` with ``m, v`` the mean and
    std of the channel means ``mu_c``.
    """

    bias: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h, means_plus = _instance_norm_plus_parts(x)
        alpha = self.param("alpha", _one_plus_normal, (1, 1, 1, c))
        gamma = self.param("gamma", _one_plus_normal, (1, 1, 1, c))
        h = h + means_plus * alpha
        h = h * gamma
        if self.bias:
            h = h + self.param("beta", nn.initializers.zeros, (1, 1, 1, c))
        return h.astype(self.dtype or x.dtype)


class ConditionalInstanceNorm2dPlus(nn.Module):
    """InstanceNorm++ whose ``gamma, alpha, beta`` are looked up per noise level ``y`` (NCSNv1).

    Parameter ``Embed_0/embedding`` of shape ``(num_classes, 3C)`` (``2C`` without bias).
    """

    num_classes: int = 10
    bias: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h, means_plus = _instance_norm_plus_parts(x)
        n_out = 3 if self.bias else 2

        def init(key, shape, dtype=jnp.float32):
            scale = _one_plus_normal(key, (shape[0], 2 * c), dtype)
            return jnp.concatenate([scale, jnp.zeros((shape[0], shape[1] - 2 * c), dtype)], -1)

        emb = nn.Embed(self.num_classes, n_out * c, embedding_init=init)(y.astype(jnp.int32))
        parts = jnp.split(emb, n_out, axis=-1)
        gamma, alpha = parts[0][:, None, None, :], parts[1][:, None, None, :]
        h = gamma * (h + means_plus * alpha)
        if self.bias:
            h = h + parts[2][:, None, None, :]
        return h.astype(self.dtype or x.dtype)


class _SpatialNorm(nn.Module):
    """A per-channel normalization over the spatial axes (:meth:`normalize`, in at least float32)
    followed by a learned per-channel ``scale`` (initialized by ``scale_init``) and, with ``bias``,
    a ``bias``; the output is in ``dtype`` or that of ``x``."""

    bias: bool = True
    dtype: Optional[Any] = None
    scale_init = staticmethod(nn.initializers.ones)

    def normalize(self, xf: jax.Array) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        h = self.normalize(x.astype(jnp.promote_types(x.dtype, jnp.float32)))
        h = h * self.param("scale", self.scale_init, (1, 1, 1, c))
        if self.bias:
            h = h + self.param("bias", nn.initializers.zeros, (1, 1, 1, c))
        return h.astype(self.dtype or x.dtype)


class InstanceNorm2d(_SpatialNorm):
    """Instance normalization with scale and bias."""

    def normalize(self, xf: jax.Array) -> jax.Array:
        mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
        return (xf - mean) / jnp.sqrt(jnp.var(xf, axis=(1, 2), keepdims=True) + 1e-5)


class VarianceNorm2d(_SpatialNorm):
    """Variance normalization (no mean subtraction) with a learned scale."""

    bias: bool = False
    scale_init = staticmethod(_one_plus_normal)

    def normalize(self, xf: jax.Array) -> jax.Array:
        return xf / jnp.sqrt(jnp.var(xf, axis=(1, 2), keepdims=True) + 1e-5)


NORMALIZATIONS: dict[str, type] = {
    "InstanceNorm++": InstanceNorm2dPlus,
    "InstanceNorm": InstanceNorm2d,
    "VarianceNorm": VarianceNorm2d,
}


class ConvMeanPool(nn.Module):
    """Convolution then 2x2 mean pooling (default flax init, as the official code)."""

    output_dim: int
    kernel_size: int = 3
    biases: bool = True
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = Conv(self.output_dim, self.kernel_size, use_bias=self.biases, dtype=self.dtype,
                 fast_paths=False)(x)
        return (y[:, ::2, ::2] + y[:, 1::2, ::2] + y[:, ::2, 1::2] + y[:, 1::2, 1::2]) / 4.0


def apply_norm(
    normalization: Callable[..., nn.Module], x: jax.Array, y: Optional[jax.Array]
) -> jax.Array:
    """Apply a fresh normalization module; noise-conditional ones (NCSNv1) also take ``y``."""
    return normalization()(x) if y is None else normalization()(x, y)


class ResidualBlock(nn.Module):
    """NCSNv2 ResNet block; ``resample='down'`` halves the size unless ``dilation > 1``.

    Called with ``y`` (noise-level indices) when ``normalization`` is noise-conditional (NCSNv1).
    """

    output_dim: int
    normalization: Callable[..., nn.Module]
    resample: Optional[str] = None
    act: Act = nn.elu
    dilation: int = 1
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, y: Optional[jax.Array] = None) -> jax.Array:
        dt, d = self.dtype, self.dilation
        h = self.act(apply_norm(self.normalization, x, y))
        if self.resample == "down":
            h = ncsn_conv(h, h.shape[-1], dilation=d, dtype=dt)
            h = self.act(apply_norm(self.normalization, h, y))
            if d > 1:
                h = ncsn_conv(h, self.output_dim, dilation=d, dtype=dt)
                shortcut = ncsn_conv(x, self.output_dim, dilation=d, dtype=dt)
            else:
                h = ConvMeanPool(self.output_dim, dtype=dt)(h)
                shortcut = ConvMeanPool(self.output_dim, kernel_size=1, dtype=dt)(x)
        elif self.resample is None:
            if d > 1:
                shortcut = x if self.output_dim == x.shape[-1] else ncsn_conv(
                    x, self.output_dim, dilation=d, dtype=dt)
                h = ncsn_conv(h, self.output_dim, dilation=d, dtype=dt)
                h = self.act(apply_norm(self.normalization, h, y))
                h = ncsn_conv(h, self.output_dim, dilation=d, dtype=dt)
            else:
                shortcut = x if self.output_dim == x.shape[-1] else ncsn_conv(
                    x, self.output_dim, kernel=1, dtype=dt)
                h = ncsn_conv(h, self.output_dim, dtype=dt)
                h = self.act(apply_norm(self.normalization, h, y))
                h = ncsn_conv(h, self.output_dim, dtype=dt)
        else:
            raise ValueError(f"resample must be None or 'down', got {self.resample!r}")
        return h + shortcut


class ConditionalResidualBlock(ResidualBlock):
    """The NCSNv1 residual block (noise-conditional normalization; official name)."""


class CRPBlock(nn.Module):
    """Chained residual pooling: ``n_stages`` of (5x5 pool, 3x3 conv) added to the input.

    NCSNv2 max-pools; the noise-conditional NCSNv1 version (``normalizer`` given) normalizes and
    average-pools.
    """

    features: int
    n_stages: int
    act: Act = nn.relu
    normalizer: Optional[Callable[..., nn.Module]] = None
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, y: Optional[jax.Array] = None) -> jax.Array:
        x = self.act(x)
        path = x
        for _ in range(self.n_stages):
            if self.normalizer is None:
                path = nn.max_pool(path, window_shape=(5, 5), strides=(1, 1), padding="SAME")
            else:
                path = apply_norm(self.normalizer, path, y)
                path = nn.avg_pool(path, window_shape=(5, 5), strides=(1, 1), padding="SAME")
            path = ncsn_conv(path, self.features, bias=False, dtype=self.dtype)
            x = path + x
        return x


class CondCRPBlock(CRPBlock):
    """NCSNv1 chained residual pooling (official name)."""


class RCUBlock(nn.Module):
    """Residual conv units: ``n_blocks`` x (``n_stages`` x ([norm], act, 3x3 conv)) + identity."""

    features: int
    n_blocks: int
    n_stages: int
    act: Act = nn.relu
    normalizer: Optional[Callable[..., nn.Module]] = None
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, x: jax.Array, y: Optional[jax.Array] = None) -> jax.Array:
        for _ in range(self.n_blocks):
            residual = x
            for _ in range(self.n_stages):
                if self.normalizer is not None:
                    x = apply_norm(self.normalizer, x, y)
                x = ncsn_conv(self.act(x), self.features, bias=False, dtype=self.dtype)
            x = x + residual
        return x


class CondRCUBlock(RCUBlock):
    """NCSNv1 residual conv units (official name)."""


class MSFBlock(nn.Module):
    """Multi-resolution fusion: ([norm], conv) each input, resize to ``shape``, sum."""

    shape: Sequence[int]
    features: int
    interpolation: str = "bilinear"
    normalizer: Optional[Callable[..., nn.Module]] = None
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], y: Optional[jax.Array] = None) -> jax.Array:
        methods = {"bilinear": "bilinear", "nearest_neighbor": "nearest"}
        if self.interpolation not in methods:
            raise ValueError(f"interpolation {self.interpolation!r} not in {sorted(methods)}")
        total = None
        for x in xs:
            h = x if self.normalizer is None else apply_norm(self.normalizer, x, y)
            h = ncsn_conv(h, self.features, dtype=self.dtype)
            h = jax.image.resize(h, (h.shape[0], *self.shape, h.shape[-1]),
                                 methods[self.interpolation])
            total = h if total is None else total + h
        return total


class CondMSFBlock(MSFBlock):
    """NCSNv1 multi-resolution fusion (official name)."""


class RefineBlock(nn.Module):
    """RefineNet block: RCU per input, multi-resolution fusion, chained pooling, output RCU.

    With ``normalizer`` (NCSNv1) the noise-conditional sub-blocks are used and ``y`` is passed on.
    """

    output_shape: Sequence[int]
    features: int
    act: Act = nn.relu
    interpolation: str = "bilinear"
    start: bool = False
    end: bool = False
    normalizer: Optional[Callable[..., nn.Module]] = None
    dtype: Optional[Any] = None

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array], y: Optional[jax.Array] = None) -> jax.Array:
        cond = self.normalizer is not None
        rcu, msf, crp = (CondRCUBlock, CondMSFBlock, CondCRPBlock) if cond else \
            (RCUBlock, MSFBlock, CRPBlock)
        kw = dict(normalizer=self.normalizer, dtype=self.dtype)
        hs = [rcu(x.shape[-1], n_blocks=2, n_stages=2, act=self.act, **kw)(x, y) for x in xs]
        if self.start:
            h = hs[0]
        else:
            h = msf(tuple(self.output_shape), self.features, self.interpolation, **kw)(hs, y)
        h = crp(self.features, n_stages=2, act=self.act, **kw)(h, y)
        return rcu(self.features, n_blocks=3 if self.end else 1, n_stages=2, act=self.act,
                   **kw)(h, y)


class CondRefineBlock(RefineBlock):
    """NCSNv1 RefineNet block (official name)."""
