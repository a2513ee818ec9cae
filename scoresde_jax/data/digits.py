"""Embedded offline image data: scikit-learn's 1797 8x8 handwritten digits.

They ship with scikit-learn (nothing to download), so the whole image pipeline (and the digits
feature network of the evaluation) runs offline: pixel values 0..16 scaled to [0, 1], one channel,
a fixed stratified train/test split (1437 / 360), optionally resized to a larger ``image_size``.
"""

from __future__ import annotations

import functools

import numpy as np

from scoresde_jax.data.images import resize_bilinear

__all__ = ["DIGITS_NUM_TEST", "load_digits_images"]

DIGITS_NUM_TEST = 360  # fixed held-out split: 1437 train / 360 test, stratified, seed 0


@functools.lru_cache(maxsize=None)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # scikit-learn takes seconds to import: only the embedded-digits path pays for it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    y = d.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=DIGITS_NUM_TEST, random_state=0, stratify=y
    )
    for a in (x_tr, x_te, y_tr, y_te):
        a.setflags(write=False)
    return x_tr, y_tr, x_te, y_te


@functools.lru_cache(maxsize=16)
def _digits_cached(split: str, image_size: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    x_tr, y_tr, x_te, y_te = _digits_split()
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    if image_size == 8:
        out = x
    elif method == "bilinear":
        out = np.stack([resize_bilinear(im, (image_size, image_size)) for im in x])
        out = np.clip(out, 0.0, 1.0)
    elif method == "nearest":
        if image_size % 8:
            raise ValueError(
                f"method='nearest' needs image_size a multiple of 8, got {image_size}."
            )
        r = image_size // 8
        out = np.repeat(np.repeat(x, r, axis=1), r, axis=2)
    elif method == "pad":
        p = image_size - 8
        out = np.pad(x, ((0, 0), (p // 2, p - p // 2), (p // 2, p - p // 2), (0, 0)))
    else:
        raise ValueError(
            f"Unknown digits resize method {method!r}; use 'bilinear', 'nearest' or 'pad'."
        )
    out = np.ascontiguousarray(out, np.float32)
    out.setflags(write=False)
    return out, y


def load_digits_images(
    split: str = "train", *, image_size: int = 8, method: str = "bilinear"
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as ``(images (N, S, S, 1) float32 in [0, 1], labels (N,))``.

    Pixel values 0..16 are divided by 16. The split is fixed (stratified, seed 0): 1437 train,
    360 test images. ``image_size > 8`` upsamples with ``method`` ('bilinear' (default),
    'nearest') or zero-pads ('pad'). Arrays are read-only and cached.
    """
    if split not in ("train", "test", "eval"):
        raise ValueError(f"digits split must be 'train' or 'test' ('eval'), got {split!r}.")
    image_size = int(image_size)
    if image_size < 8:
        raise ValueError(f"DIGITS needs image_size >= 8 (native 8x8), got {image_size}.")
    return _digits_cached("train" if split == "train" else "test", image_size, method)
