"""The FID Inception-v3 network (the 2015-12-05 TensorFlow graph of TF-GAN / TTUR) in Flax linen.

This is the variant every FID implementation agrees on (TF-GAN, TTUR, pytorch-fid, torch-fidelity),
which differs from torchvision's Inception-v3 in three places:

* the average pools of the A, C and first E blocks do not count the zero padding
  (TensorFlow ``avg_pool`` with ``SAME`` padding), ``mean = sum / #valid`` per window;
* the last E block (``Mixed_7c``) pools its ``branch_pool`` with a 3x3 *max* pool;
* the classifier has 1008 outputs, and ``logits_unbiased = pool_3 @ W^T`` is exposed beside
  ``logits = logits_unbiased + b`` (torch-fidelity's Inception Score uses the former).

Every convolution is ``relu(BN(conv(x)))`` without a convolution bias; BatchNorm runs in inference
mode, ``y = (x - mean) / sqrt(var + 1e-3) * scale + bias``. Layout NHWC; the input is the
preprocessed image, ``(B, 299, 299, 3)`` in ``[-1, 1]``
(:mod:`scoresde_jax.evaluation.inception` does the resize and the scaling).

1x1 convolutions run as matmuls (same numbers, see ``_Conv1x1``), and two switches of every
module (set by the extractor; the defaults are the plain graph whose variables carry the torch
names) change how the same function is computed (speed: benchmarks/README.md):

* ``folded=True``: BatchNorm folded into the convolution, ``relu(conv(x, W g) + (beta - mean g))``
  with ``g = scale / sqrt(var + eps)`` (:func:`fold_batchnorm`; float32 rounding moves the
  outputs by ~4e-6 of their std); less to trace and compile.
* ``pad_valid=True``: an unpadded (``VALID``) convolution larger than 1x1 gets one row / column
  of zero padding at the high end, cropped back: the same numbers (the extra row is in no kept
  window), which XLA CPU runs faster than ``VALID`` convolutions.

Convolutions and the classifier use ``precision=HIGHEST``: true float32 on GPU (no TF32) and
TPU (no single-pass bfloat16), whatever ``jax_default_matmul_precision`` says; FID features need
float32 accuracy. On CPU it changes nothing (float32 either way).

Flax modules are named after the PyTorch state dict (``Mixed_6b.branch7x7dbl_3.conv.weight`` is
``params/Mixed_6b/branch7x7dbl_3/conv/kernel``), so :func:`torch_name_map` is a rename plus a
transpose. :func:`random_state_dict` draws a seeded state dict with the real names and shapes, for
tests (the real weights cannot be downloaded here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

__all__ = [
    "BN_EPS",
    "InceptionV3",
    "abstract_variables",
    "fold_batchnorm",
    "random_state_dict",
    "torch_name_map",
]

BN_EPS = 1e-3


class BasicConv(nn.Module):
    """``relu(BN(conv(x)))``: convolution without bias, BatchNorm (eps 1e-3, running statistics);
    ``folded``: ``relu(conv(x) + bias)`` (BatchNorm folded in); ``pad_valid``: an unpadded
    convolution computed padded and cropped (see the module docstring)."""

    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    precision: jax.lax.Precision | None = jax.lax.Precision.HIGHEST
    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.strides, self.padding
        pad = ((ph, ph), (pw, pw))
        keep = None
        if self.pad_valid and (ph, pw) == (0, 0) and (kh, kw) != (1, 1):
            keep = ((x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1)
            pad = ((0, 1), (0, 1))
        if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
            conv = _Conv1x1(self.features, self.folded, self.precision, name="conv")
        else:
            conv = nn.Conv(self.features, self.kernel_size, self.strides, padding=pad,
                           use_bias=self.folded, precision=self.precision, name="conv")
        x = conv(x)
        if keep is not None:
            x = x[:, : keep[0], : keep[1]]
        if not self.folded:
            x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
        return nn.relu(x)


class _Conv1x1(nn.Module):
    """A 1x1 convolution as the matmul ``x @ kernel[0, 0]`` over the channels: the variables of
    ``nn.Conv`` (``kernel (1, 1, in, out)``, ``bias``), the same numbers, and on XLA CPU 1.3-3.9x
    faster than the convolution (e.g. the 1x1 branches of ``Mixed_6b``: 100 -> 26 ms, 8 images)."""

    features: int
    use_bias: bool
    precision: jax.lax.Precision | None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (1, 1, x.shape[-1], self.features)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        y = jnp.dot(x, kernel[0, 0].astype(x.dtype), precision=self.precision)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        return y


def _convs(m: nn.Module) -> Callable[..., BasicConv]:
    """``BasicConv`` with the ``folded`` / ``pad_valid`` switches of the enclosing module."""
    return functools.partial(BasicConv, folded=m.folded, pad_valid=m.pad_valid)


def _avg_pool_3x3(x: jax.Array) -> jax.Array:
    """3x3, stride 1, pad 1 average that divides by the number of valid (unpadded) pixels."""
    return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (3, 3), (2, 2), padding="VALID")


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (``pool_features`` channels)."""

    pool_features: int
    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _convs(self)
        b1 = conv(64, name="branch1x1")(x)
        b5 = conv(48, name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    """35 -> 17 reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _convs(self)
        b3 = conv(384, (3, 3), (2, 2), name="branch3x3")(x)
        bd = conv(64, name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), (2, 2), name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class InceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions (``c7`` inner channels)."""

    c7: int
    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _convs(self)
        c7 = self.c7
        row = dict(kernel_size=(1, 7), padding=(0, 3))
        col = dict(kernel_size=(7, 1), padding=(3, 0))
        b1 = conv(192, name="branch1x1")(x)
        b7 = conv(c7, name="branch7x7_1")(x)
        b7 = conv(c7, **row, name="branch7x7_2")(b7)
        b7 = conv(192, **col, name="branch7x7_3")(b7)
        bd = conv(c7, name="branch7x7dbl_1")(x)
        bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = conv(192, **row, name="branch7x7dbl_5")(bd)
        bp = conv(192, name="branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    """17 -> 8 reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _convs(self)
        b3 = conv(192, name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), (2, 2), name="branch3x3_2")(b3)
        b7 = conv(192, name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), (2, 2), name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches; ``pool`` is ``"avg"`` (Mixed_7b) or ``"max"``
    (Mixed_7c, as in the FID graph)."""

    pool: str = "avg"
    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = _convs(self)
        row = dict(kernel_size=(1, 3), padding=(0, 1))
        col = dict(kernel_size=(3, 1), padding=(1, 0))
        b1 = conv(320, name="branch1x1")(x)
        b3 = conv(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate([conv(384, **row, name="branch3x3_2a")(b3),
                              conv(384, **col, name="branch3x3_2b")(b3)], axis=-1)  # fmt: skip
        bd = conv(448, name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate([conv(384, **row, name="branch3x3dbl_3a")(bd),
                              conv(384, **col, name="branch3x3dbl_3b")(bd)], axis=-1)  # fmt: skip
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
        bp = conv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class Logits(nn.Module):
    """``logits_unbiased = h @ kernel``, ``logits = logits_unbiased + bias`` (1008 classes)."""

    num_classes: int = 1008

    @nn.compact
    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        shape = (h.shape[-1], self.num_classes)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        unbiased = jnp.dot(h, kernel.astype(h.dtype), precision=jax.lax.Precision.HIGHEST)
        return unbiased, unbiased + bias.astype(h.dtype)


class InceptionV3(nn.Module):
    """FID Inception-v3: ``x (B, 299, 299, 3) in [-1, 1] -> {"pool_3", "logits_unbiased",
    "logits"}`` with shapes ``(B, 2048)``, ``(B, 1008)``, ``(B, 1008)``."""

    num_classes: int = 1008
    folded: bool = False
    pad_valid: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        conv = _convs(self)
        sw = dict(folded=self.folded, pad_valid=self.pad_valid)
        x = conv(32, (3, 3), (2, 2), name="Conv2d_1a_3x3")(x)  # 149
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)  # 73
        x = conv(80, name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71
        x = _max_pool_3x3_s2(x)  # 35
        x = InceptionA(32, **sw, name="Mixed_5b")(x)  # 256 channels
        x = InceptionA(64, **sw, name="Mixed_5c")(x)  # 288
        x = InceptionA(64, **sw, name="Mixed_5d")(x)  # 288
        x = InceptionB(**sw, name="Mixed_6a")(x)  # 17x17x768
        x = InceptionC(128, **sw, name="Mixed_6b")(x)
        x = InceptionC(160, **sw, name="Mixed_6c")(x)
        x = InceptionC(160, **sw, name="Mixed_6d")(x)
        x = InceptionC(192, **sw, name="Mixed_6e")(x)
        x = InceptionD(**sw, name="Mixed_7a")(x)  # 8x8x1280
        x = InceptionE("avg", **sw, name="Mixed_7b")(x)  # 2048
        x = InceptionE("max", **sw, name="Mixed_7c")(x)
        pool_3 = jnp.mean(x, axis=(1, 2))
        unbiased, logits = Logits(self.num_classes, name="fc")(pool_3)
        return {"pool_3": pool_3, "logits_unbiased": unbiased, "logits": logits}


# --------------------------------------------------------------------------------------------
# Names: Flax variables <-> the PyTorch FID state dict.
# --------------------------------------------------------------------------------------------

_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def abstract_variables() -> dict:
    """Shapes / dtypes of ``InceptionV3().init`` (``{"params": ..., "batch_stats": ...}``),
    without computing anything."""
    x = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    return jax.eval_shape(lambda: InceptionV3().init(jax.random.key(0), jnp.zeros(x.shape)))


def _torch_shape(flax_shape: Sequence[int]) -> tuple[int, ...]:
    """(kh, kw, in, out) -> (out, in, kh, kw); (in, out) -> (out, in); vectors unchanged."""
    if len(flax_shape) == 4:
        kh, kw, ci, co = flax_shape
        return (co, ci, kh, kw)
    if len(flax_shape) == 2:
        return tuple(flax_shape[::-1])
    return tuple(flax_shape)


def torch_name_map() -> dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``{torch name: (flat Flax name, torch shape, Flax shape)}`` for every tensor of the FID
    state dict except BatchNorm's ``num_batches_tracked`` counters (not used at inference).

    Flat Flax names join the variable path with ``/``: ``params/Mixed_5b/branch1x1/conv/kernel``.
    """
    return dict(_name_map_items())


@functools.lru_cache(maxsize=1)
def _name_map_items() -> tuple:
    flat = traverse_util.flatten_dict(abstract_variables())
    items = []
    for path, leaf in sorted(flat.items()):
        collection, *mods, leaf_name = path
        torch_name = ".".join([*mods, _LEAF_TO_TORCH[(collection, leaf_name)]])
        items.append((torch_name, ("/".join(path), _torch_shape(leaf.shape), tuple(leaf.shape))))
    return tuple(items)


def torch_to_flax(name: str, value: np.ndarray) -> np.ndarray:
    """One torch tensor in the layout of its Flax variable (convolutions OIHW -> HWIO,
    the linear layer (out, in) -> (in, out))."""
    value = np.asarray(value)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def random_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded stand-in for the FID weights: the real torch names and shapes (566 tensors,
    23.9M parameters, ``num_batches_tracked`` included), float32.

    Convolutions ``N(0, 2 / fan_in)`` (He); BatchNorm scale ``U(0.8, 1.2)``, bias ``N(0, 0.1^2)``,
    running mean ``N(0, 0.1^2)``, running variance ``U(0.5, 1.5)``; ``fc.weight``
    ``N(0, 1 / 2048)``, ``fc.bias`` ``N(0, 0.1^2)``. Activations keep an O(1) scale through the
    network, so the outputs are a meaningful parity check.
    """
    rng = np.random.default_rng(seed)
    sd: dict[str, np.ndarray] = {}
    for name, (_, shape, _) in torch_name_map().items():
        if name.endswith("conv.weight"):
            fan_in = int(np.prod(shape[1:]))
            v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name == "fc.weight":
            v = rng.normal(0.0, np.sqrt(1.0 / shape[1]), shape)
        elif name.endswith("bn.weight"):
            v = rng.uniform(0.8, 1.2, shape)
        elif name.endswith("running_var"):
            v = rng.uniform(0.5, 1.5, shape)
        else:  # bn.bias, running_mean, fc.bias
            v = rng.normal(0.0, 0.1, shape)
        sd[name] = v.astype(np.float32)
        if name.endswith("bn.running_var"):
            sd[name.replace("running_var", "num_batches_tracked")] = np.array(0, np.int64)
    return sd


def fold_batchnorm(variables: dict) -> dict:
    """The variables of ``InceptionV3(folded=True)`` from those of ``InceptionV3()``: every
    ``conv/kernel`` ``W`` with its ``bn`` (scale, bias, mean, var) becomes ``conv/kernel = W g``
    and ``conv/bias = bias - mean g``, ``g = scale / sqrt(var + 1e-3)`` (computed in float64,
    stored in the kernel's dtype); ``fc`` is unchanged. Returns ``{"params": ...}`` (numpy)."""
    params = traverse_util.flatten_dict(variables["params"])
    stats = traverse_util.flatten_dict(variables["batch_stats"])
    f64 = functools.partial(np.asarray, dtype=np.float64)
    out = {}
    for path, value in params.items():
        *mod, _ = path
        w = np.asarray(value)
        if mod and mod[-1] == "conv":
            bn = (*mod[:-1], "bn")
            g = f64(params[(*bn, "scale")]) / np.sqrt(f64(stats[(*bn, "var")]) + BN_EPS)
            out[path] = (f64(w) * g).astype(w.dtype)
            beta, mean = f64(params[(*bn, "bias")]), f64(stats[(*bn, "mean")])
            out[(*mod, "bias")] = (beta - mean * g).astype(w.dtype)
        elif not (mod and mod[-1] == "bn"):
            out[path] = w
    return {"params": traverse_util.unflatten_dict(out)}
