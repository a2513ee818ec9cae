"""FID Inception-v3 features from a user-supplied weights file: convert once, then extract.

The network (:mod:`scoresde_jax.evaluation.inception_net`) is the FID Inception-v3 graph of
2015-12-05. Its weights cannot be downloaded here; the public file
``pt_inception-2015-12-05-6726825d.pth`` of pytorch-fid / torch-fidelity (a PyTorch state dict
converted from the TensorFlow graph) is turned into this package's ``.npz`` layout once::

    scoresde convert-inception pt_inception-2015-12-05-6726825d.pth --out inception_fid.npz

(:func:`convert_weights`) and :func:`load_inception` then gives
``extractor(images) -> {"pool_3": (B, 2048), "logits": (B, 1008), "logits_unbiased": (B, 1008)}``.

Preprocessing: image -> 299x299 in [-1, 1]. The implementations differ in the scaling and the
resize, and these differences move FID (the resize most, at CIFAR-10's 32 -> 299):

* ``"score_sde"`` (the paper's code, TF-GAN / TF-Hub): float images are quantized as
  ``u = uint8(clip(255 x, 0, 255))`` (truncation, not rounding), scaled ``(u - 127.5) / 127.5``,
  and resized with TF1 ``resize_bilinear(align_corners=False)`` *without* half-pixel centres:
  output pixel ``i`` samples source coordinate ``s = i * in / out``, clamped bilinear lerp.
* ``"torch_fidelity"``: ``(u - 128) / 128`` (the graph's own constant) and torch-fidelity's
  TF1-compatible resize, which is the same formula as above; ``pool_3`` differs from
  ``"score_sde"`` only through the scale (1/128 vs 1/127.5, a 0.4% contrast change and a
  1/255 shift), typically a few hundredths of FID.
* ``"pytorch_fid"``: ``2 x - 1`` of ``x = u / 255`` (float images used as they are, not
  quantized) and torch ``F.interpolate(mode="bilinear", align_corners=False)``, the half-pixel
  resize ``s = (i + 0.5) * in / out - 0.5`` (clamped at 0). At 32 -> 299 its sampling grid is
  shifted by about 0.45 source pixels against TF1's, which is the main source of the
  pytorch-fid vs TF FID gap (about 1 FID point on CIFAR-10, e.g. clean-fid's legacy vs clean).

Resizing is linear with weights that sum to one, so it commutes with the affine scaling; it is
applied first, as in torch-fidelity and pytorch-fid.

Precision and speed: every convolution and the classifier run at ``precision=HIGHEST``, true
float32 on GPU (no TF32) and TPU (no single-pass bfloat16) whatever
``jax_default_matmul_precision`` says: TF32 / bfloat16 operands keep 10 / 7 mantissa bits
(relative rounding 5e-4 / 4e-3), far coarser than the 1e-4 parity tolerance of the features
against the reference; on CPU it changes nothing (float32 either way, the same bits). The extractor runs
preprocessing and network in one ``jit`` with the batch sharded over the local devices, in
chunks of :data:`MAX_BATCH_PER_DEVICE`; BatchNorm is folded into the convolutions, 1x1
convolutions are matmuls and, on CPU, ``VALID`` convolutions take XLA's faster padded path (see
:mod:`.inception_net`): 1.3-1.5x the first version on this 2-core CPU, about 70% of the GFLOP/s
of a plain ``lax.conv`` stack (each block 80-100%; ``benchmarks/bench_inception.py``). At 11.4 GFLOP per
image a 50,000-sample FID is CPU-hours; use an accelerator for real evaluations.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from scoresde_jax.evaluation.inception_net import (
    InceptionV3,
    fold_batchnorm,
    random_state_dict,
    torch_name_map,
    torch_to_flax,
)

__all__ = [
    "CONVERT_COMMAND",
    "MAX_BATCH_PER_DEVICE",
    "PREPROCESS_MODES",
    "InceptionExtractor",
    "InceptionV3",
    "convert_weights",
    "load_inception",
    "load_variables",
    "preprocess_images",
    "random_state_dict",
    "resize_bilinear",
]

INPUT_SIZE = 299
PREPROCESS_MODES = ("score_sde", "torch_fidelity", "pytorch_fid")
CONVERT_COMMAND = "scoresde convert-inception SRC --out inception_fid.npz"
# Images per device in one compiled call (the extractor's chunks, whatever the eval round size):
# on CPU images/s is flat from 1 to 50 images per call, while XLA's temporaries grow by 8 MiB
# per image (a round of 1024 in one call would hold 8 GiB).
MAX_BATCH_PER_DEVICE = {"cpu": 16, "gpu": 256, "tpu": 256}
_FORMAT_KEY = "__format__"
_FORMAT = "scoresde_jax.inception_fid.v1"
_NPZ_HINT = (
    "python -c \"import numpy, torch; sd = torch.load('SRC.pth', weights_only=True); "
    "numpy.savez('inception_torch.npz', **{k: v.numpy() for k, v in sd.items()})\""
)


# --------------------------------------------------------------------------------------------
# Resize.
# --------------------------------------------------------------------------------------------


def _resize_indices(
    in_size: int, out_size: int, half_pixel_centers: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``lo``, ``hi = min(lo + 1, in - 1)`` and weight ``frac = s - lo`` of each
    output pixel, in float32 as both TF1 and torch compute them.

    TF1 (``half_pixel_centers=False``): ``s = i * (in / out)``;
    half-pixel (torch ``align_corners=False``): ``s = max((i + 0.5) * (in / out) - 0.5, 0)``.
    """
    scale = np.float32(in_size / out_size)
    i = np.arange(out_size, dtype=np.float32)
    if half_pixel_centers:
        src = np.maximum((i + np.float32(0.5)) * scale - np.float32(0.5), np.float32(0.0))
    else:
        src = i * scale
    lo = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = (src - lo.astype(np.float32)).astype(np.float32)
    return lo, hi, frac


def _lerp_axis(x: jax.Array, axis: int, out_size: int, half_pixel_centers: bool) -> jax.Array:
    lo, hi, frac = _resize_indices(x.shape[axis], out_size, half_pixel_centers)
    shape = [1] * x.ndim
    shape[axis] = out_size
    w = jnp.asarray(frac, x.dtype).reshape(shape)
    a, b = jnp.take(x, lo, axis=axis), jnp.take(x, hi, axis=axis)
    return a + (b - a) * w


def resize_bilinear(
    images: jax.Array, size: tuple[int, int], *, half_pixel_centers: bool
) -> jax.Array:
    """Bilinear resize of ``images (B, H, W, C)`` (float) to ``size = (H', W')``, no antialias.

    Separable: along W then along H, each ``out[i] = x[lo] + (x[hi] - x[lo]) * frac`` with the
    indices of :func:`_resize_indices` (TF1 ``resize_bilinear(align_corners=False)`` for
    ``half_pixel_centers=False``, torch ``F.interpolate(mode="bilinear", align_corners=False)``
    for ``True``). An unchanged size is returned as it is.
    """
    out_h, out_w = size
    if images.shape[2] != out_w:
        images = _lerp_axis(images, 2, out_w, half_pixel_centers)
    if images.shape[1] != out_h:
        images = _lerp_axis(images, 1, out_h, half_pixel_centers)
    return images


def preprocess_images(images: jax.Array, *, mode: str = "score_sde") -> jax.Array:
    """``images (B, H, W, 3)``, uint8 in [0, 255] or float in [0, 1] -> float32
    ``(B, 299, 299, 3)`` in [-1, 1], as ``mode`` (one of :data:`PREPROCESS_MODES`) says.

    score_sde:       u = trunc(clip(255 x, 0, 255));  TF1 resize;       (u - 127.5) / 127.5
    torch_fidelity:  u = trunc(clip(255 x, 0, 255));  TF1 resize;       (u - 128) / 128
    pytorch_fid:     x = u / 255 (float x as is);     half-pixel resize; 2 x - 1
    """
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess={mode!r} is not one of {PREPROCESS_MODES}")
    images = jnp.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) NHWC RGB, got shape {images.shape}")
    is_uint8 = images.dtype == jnp.uint8
    if not is_uint8 and not jnp.issubdtype(images.dtype, jnp.floating):
        raise TypeError(f"images must be uint8 in [0, 255] or float in [0, 1], got {images.dtype}")
    x = images.astype(jnp.float32)
    if mode == "pytorch_fid":
        if is_uint8:
            x = x / 255.0
        x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE), half_pixel_centers=True)
        return 2.0 * x - 1.0
    if not is_uint8:
        x = jnp.floor(jnp.clip(x * 255.0, 0.0, 255.0))
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE), half_pixel_centers=False)
    if mode == "score_sde":
        return (x - 127.5) / 127.5
    return (x - 128.0) / 128.0


# --------------------------------------------------------------------------------------------
# Weights.
# --------------------------------------------------------------------------------------------


def _read_state_dict(src: str | os.PathLike) -> dict[str, np.ndarray]:
    src = os.fspath(src)
    if not os.path.exists(src):
        raise FileNotFoundError(f"no Inception weights file at {src!r}")
    if src.endswith(".npz"):
        with np.load(src, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading the PyTorch file {src!r} needs torch (pip install torch, the CPU wheel "
            "is enough); or, where torch is installed, save the state dict as an .npz with the "
            f"same names and pass that instead:\n  {_NPZ_HINT}"
        ) from e
    sd = torch.load(src, map_location="cpu", weights_only=True)
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


def _check_names(sd: dict[str, np.ndarray]) -> None:
    expected = torch_name_map()
    given = {k for k in sd if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - given)
    unexpected = sorted(given - set(expected))
    misshaped = [
        f"{k}: {tuple(np.shape(sd[k]))}, expected {expected[k][1]}"
        for k in sorted(given & set(expected))
        if tuple(np.shape(sd[k])) != expected[k][1]
    ]
    problems = []
    if missing:
        problems.append(f"missing ({len(missing)}): " + ", ".join(missing))
    if unexpected:
        problems.append(f"unexpected ({len(unexpected)}): " + ", ".join(unexpected))
    if misshaped:
        problems.append(f"mis-shaped ({len(misshaped)}): " + "; ".join(misshaped))
    if problems:
        raise ValueError(
            "not the FID Inception-v3 state dict (pt_inception-2015-12-05-6726825d.pth of "
            "pytorch-fid / torch-fidelity):\n  " + "\n  ".join(problems)
        )


def convert_weights(src: str | os.PathLike, out: str | os.PathLike) -> str:
    """Convert the FID Inception state dict ``src`` (``.pth`` via torch, or an ``.npz`` with the
    same torch names) to ``out``, an ``.npz`` of the flat Flax variable names
    (``params/Mixed_5b/branch1x1/conv/kernel``, ``batch_stats/.../bn/var``, ...), float32.

    Convolutions OIHW -> HWIO, ``fc.weight`` (1008, 2048) -> (2048, 1008); BatchNorm
    ``weight/bias/running_mean/running_var`` -> ``scale/bias/mean/var``; ``num_batches_tracked``
    is dropped. Every missing, unexpected or mis-shaped name is listed in one ``ValueError``.
    Returns ``out``.
    """
    sd = _read_state_dict(src)
    _check_names(sd)
    flat = {
        flax_name: torch_to_flax(name, sd[name]).astype(np.float32)
        for name, (flax_name, _, _) in torch_name_map().items()
    }
    flat[_FORMAT_KEY] = np.array(_FORMAT)
    out = os.fspath(out)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "wb") as f:  # a file object: np.savez would append ".npz" to other names
        np.savez(f, **flat)
    return out


def load_variables(path: str | os.PathLike) -> dict[str, Any]:
    """The Flax variables ``{"params": ..., "batch_stats": ...}`` from a :func:`convert_weights`
    file (numpy arrays)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no Inception weights at {path!r}; make them from the FID weights file "
            f"(pt_inception-2015-12-05-6726825d.pth of pytorch-fid / torch-fidelity) with: "
            f"{CONVERT_COMMAND}"
        )
    if not path.endswith(".npz"):
        raise ValueError(f"{path!r} is not a converted .npz; convert it first: {CONVERT_COMMAND}")
    with np.load(path, allow_pickle=False) as z:
        flat = {k: z[k] for k in z.files}
    if str(flat.pop(_FORMAT_KEY, "")) != _FORMAT:
        raise ValueError(
            f"{path!r} is not a converted Inception file (no {_FORMAT_KEY}={_FORMAT!r}); if it "
            f"holds the torch state dict, convert it first: {CONVERT_COMMAND}"
        )
    expected = {fn: shape for fn, _, shape in torch_name_map().values()}
    bad = sorted(set(expected) ^ set(flat)) + sorted(
        k for k in set(expected) & set(flat) if flat[k].shape != expected[k]
    )
    if bad:
        raise ValueError(f"{path!r} has missing, extra or mis-shaped variables: {', '.join(bad)}")
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


# --------------------------------------------------------------------------------------------
# Extractor.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("mode", "pad_valid"))
def _extract_jit(variables: dict, images: jax.Array, mode: str, pad_valid: bool) -> dict:
    x = preprocess_images(images, mode=mode)
    return InceptionV3(folded=True, pad_valid=pad_valid).apply(variables, x)


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


class InceptionExtractor:
    """``extractor(images) -> {"pool_3", "logits", "logits_unbiased"}`` (numpy float32).

    ``images (B, H, W, 3)``: uint8 in [0, 255] or float in [0, 1]. Preprocessing and the network
    run in one ``jit`` with the batch sharded over ``devices`` (default: this process's
    devices; the variables replicated), in chunks of at most ``max_batch`` images (default
    :data:`MAX_BATCH_PER_DEVICE` of the platform times the device count), each padded to a whole
    number of images per device; ``batch_size`` asks for smaller chunks. All chunks have one
    shape, so one compilation serves them. BatchNorm is folded into the convolutions once here
    (:func:`~.inception_net.fold_batchnorm`) and on CPU ``VALID`` convolutions take XLA's fast
    padded path (``pad_valid``, see :mod:`.inception_net`); convolutions and the classifier run at
    ``precision=HIGHEST`` (float32 on GPU / TPU too). :meth:`features` is the pure, traceable
    version returning jax arrays; :meth:`as_feature_extractor` adapts it to the
    ``images -> (pool_3, logits)`` protocol of :mod:`scoresde_jax.evaluation.features`.
    """

    def __init__(self, variables: dict, *, preprocess: str = "score_sde",
                 devices: Sequence[jax.Device] | None = None, max_batch: int | None = None):
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"preprocess={preprocess!r} is not one of {PREPROCESS_MODES}")
        devices = list(jax.local_devices() if devices is None else devices)
        self.mesh = Mesh(np.asarray(devices), ("data",))
        self.preprocess = preprocess
        self.pad_valid = devices[0].platform == "cpu"
        n_dev = len(devices)
        per_device = MAX_BATCH_PER_DEVICE.get(devices[0].platform, 64)
        self.max_batch = _round_up(int(max_batch or per_device * n_dev), n_dev)
        folded = fold_batchnorm(variables) if "batch_stats" in variables else variables
        self.variables = jax.device_put(folded, NamedSharding(self.mesh, P()))
        self._batch = NamedSharding(self.mesh, P("data"))

    def features(self, images: jax.Array) -> dict[str, jax.Array]:
        """Traceable ``images -> {"pool_3", "logits", "logits_unbiased"}`` (jax arrays)."""
        x = preprocess_images(images, mode=self.preprocess)
        return InceptionV3(folded=True, pad_valid=self.pad_valid).apply(self.variables, x)

    def _run(self, images: np.ndarray, size: int) -> dict[str, np.ndarray]:
        m = images.shape[0]
        if m < size:
            images = np.concatenate([images, np.zeros((size - m, *images.shape[1:]), images.dtype)])
        out = _extract_jit(self.variables, jax.device_put(images, self._batch), self.preprocess,
                           self.pad_valid)
        return {k: np.asarray(v, np.float32)[:m] for k, v in out.items()}

    def __call__(self, images: Any, *, batch_size: int | None = None) -> dict[str, np.ndarray]:
        images = np.asarray(images)
        n, n_dev = images.shape[0], self.mesh.devices.size
        if n == 0:
            sizes = {"pool_3": 2048, "logits_unbiased": 1008, "logits": 1008}
            return {k: np.zeros((0, d), np.float32) for k, d in sizes.items()}
        chunk = min(int(batch_size or n), self.max_batch)
        chunk = _round_up(max(min(chunk, n), 1), n_dev)
        parts = [self._run(images[i : i + chunk], chunk) for i in range(0, n, chunk)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def as_feature_extractor(self, *, logits: str = "logits", batch_size: int | None = None):
        """``images -> (pool_3, logits)`` for :func:`~scoresde_jax.evaluation.compute_statistics`
        (``logits="logits_unbiased"`` for torch-fidelity's Inception Score)."""

        def extract(images):
            out = self(images, batch_size=batch_size)
            return out["pool_3"], out[logits]

        return extract


def load_inception(path: str | os.PathLike, *, preprocess: str = "score_sde",
                   devices: Sequence[jax.Device] | None = None,
                   max_batch: int | None = None) -> InceptionExtractor:
    """The FID Inception-v3 extractor from a :func:`convert_weights` ``.npz``; ``preprocess`` is
    one of :data:`PREPROCESS_MODES` (see the module docstring for what each changes);
    ``devices`` / ``max_batch`` as :class:`InceptionExtractor`."""
    return InceptionExtractor(load_variables(path), preprocess=preprocess, devices=devices,
                              max_batch=max_batch)
