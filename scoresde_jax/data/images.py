"""Image ops of the input pipelines (numpy + PIL) and the data scalers.

The resize and crop functions are the numpy equivalents of the ``tf.image`` calls in the official
score_sde ``datasets.py``; images are float ``(H, W, C)`` arrays in [0, 1] unless said otherwise.
The scalers map the pipeline's [0, 1] images to the model's range: ``x -> 2x - 1`` (centered
data in [-1, 1]) and back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "central_crop",
    "crop_resize",
    "inverse_scaler",
    "resize_bilinear",
    "resize_small",
    "scaler",
]


def _check_centered(centered: Any) -> bool:
    if not isinstance(centered, (bool, np.bool_)):
        raise TypeError(
            f"scaler/inverse_scaler take `centered: bool`; got {type(centered).__name__}. "
            "Pass bool(config.data.centered)."
        )
    return bool(centered)


def scaler(centered: bool) -> Callable[[Any], Any]:
    """Data normalizer: ``x in [0, 1] -> 2x - 1 in [-1, 1]`` if ``centered``, else the identity."""
    if _check_centered(centered):
        return lambda x: x * 2.0 - 1.0
    return lambda x: x


def inverse_scaler(centered: bool) -> Callable[[Any], Any]:
    """Inverse of :func:`scaler`: ``x -> (x + 1) / 2`` if ``centered``, else the identity."""
    if _check_centered(centered):
        return lambda x: (x + 1.0) / 2.0
    return lambda x: x


def _pil_resize(img: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize a float (H, W, C) image channel by channel in PIL's float mode.

    PIL widens the kernel by the scale factor when shrinking, i.e. it antialiases like
    ``tf.image.resize(..., antialias=True)`` / ``jax.image.resize`` (half-pixel centers).
    """
    h, w = size
    img = np.asarray(img, np.float32)
    chans = [
        np.asarray(Image.fromarray(img[..., c], mode="F").resize((w, h), resample=resample))
        for c in range(img.shape[-1])
    ]
    return np.stack(chans, axis=-1).astype(np.float32)


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float (H, W, C) image to ``size = (h, w)``."""
    if tuple(img.shape[:2]) == tuple(size):
        return np.asarray(img, np.float32)
    return _pil_resize(img, size, Image.BILINEAR)


def central_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Crop the central ``size x size`` window (``tf.image.crop_to_bounding_box`` as official)."""
    top = (img.shape[0] - size) // 2
    left = (img.shape[1] - size) // 2
    if top < 0 or left < 0:
        raise ValueError(f"central_crop: image of shape {img.shape} is smaller than {size}.")
    return img[top : top + size, left : left + size]


def resize_small(img: np.ndarray, resolution: int) -> np.ndarray:
    """Resize so that the shorter side is ``resolution`` (antialiased bilinear), keep aspect."""
    h, w = img.shape[:2]
    ratio = resolution / min(h, w)
    return resize_bilinear(img, (int(round(h * ratio)), int(round(w * ratio))))


def crop_resize(img: np.ndarray, resolution: int) -> np.ndarray:
    """Central square crop then antialiased bicubic resize to ``resolution``; uint8 in and out.

    Official score_sde LSUN preprocessing for image sizes other than 128.
    """
    h, w = img.shape[:2]
    crop = min(h, w)
    img = img[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
    out = _pil_resize(img.astype(np.float32), (resolution, resolution), Image.BICUBIC)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (``tf.image.convert_image_dtype``)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32)
