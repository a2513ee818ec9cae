"""Decoding the images of a folder dataset, in Grain's readers: :func:`decode_image` and the
random-access :class:`FolderSource` over a :class:`~scoresde_jax.data.folder.FolderIndex`.

Pixels: converted to ``num_channels`` (1: ``L``, 3: ``RGB``; alpha dropped, 16-bit grayscale
scaled to 8 bits, EXIF orientation applied), then, when the image is not
``image_size x image_size``, EDM's ``dataset_tool.py --transform=center-crop``: the central
square of side ``min(H, W)``, resized with PIL's Lanczos filter (antialiased when shrinking).
"""

from __future__ import annotations

import io
import threading
import zipfile
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from scoresde_jax.data.folder import FolderIndex, read_member

__all__ = ["FolderSource", "decode_image", "to_float"]

_ORIENTATION = 0x0112  # the EXIF tag of the camera's orientation


def _to_mode(im: Image.Image, num_channels: int) -> Image.Image:
    if im.mode.startswith("I"):  # 16-bit (or 32-bit integer) grayscale -> 8 bits
        a = np.asarray(im, np.float64)
        im = Image.fromarray(np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, np.float64)
        scale = 255.0 if a.max(initial=0.0) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    elif im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("L" if num_channels == 1 else "RGB")


def decode_image(data: bytes, *, image_size: int, num_channels: int) -> np.ndarray:
    """Encoded image bytes -> uint8 ``(image_size, image_size, num_channels)``: the mode
    conversion, then EDM's center crop + Lanczos resize when the size differs (module
    docstring); ``image_size=0`` keeps the size."""
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.getexif().get(_ORIENTATION, 1) != 1:
            im = ImageOps.exif_transpose(im)
        if im.mode != ("L" if num_channels == 1 else "RGB"):
            im = _to_mode(im, num_channels)
    w, h = im.size
    if image_size and (w, h) != (image_size, image_size):
        c = min(w, h)
        left, top = (w - c) // 2, (h - c) // 2
        im = im.crop((left, top, left + c, top + c)).resize((image_size, image_size),
                                                              Image.LANCZOS)
    arr = np.asarray(im, np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


class FolderSource:
    """Grain random-access source over a :class:`FolderIndex`: ``source[i]`` reads and decodes
    image ``i`` (:func:`decode_image`) -> ``{'image': uint8 (S, S, C), 'label': int32}``.

    Picklable (for Grain worker processes): an open zip is per thread and never pickled."""

    def __init__(self, index: FolderIndex, *, image_size: int, num_channels: int):
        if int(num_channels) not in (1, 3):
            raise ValueError(f"data.num_channels={num_channels}: a folder dataset gives 1 "
                             "(grayscale) or 3 (RGB) channels; set it to 1 or 3.")
        self.index = index
        self.image_size, self.num_channels = int(image_size), int(num_channels)
        self._local = threading.local()

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _zip(self) -> zipfile.ZipFile | None:
        if not self.index.is_zip:
            return None
        zf = getattr(self._local, "zf", None)
        if zf is None:
            zf = self._local.zf = zipfile.ZipFile(self.index.path)
        return zf

    def read(self, i: int) -> bytes:
        """The encoded bytes of image ``i``."""
        rel = self.index.files[int(i)].decode()
        return read_member(self.index.path, self.index.prefix, rel, self._zip())

    def __getitem__(self, i: Any) -> dict:
        i = int(i)
        image = decode_image(self.read(i), image_size=self.image_size,
                             num_channels=self.num_channels)
        return {"image": image, "label": np.int32(self.index.labels[i])}

    def __repr__(self) -> str:
        return (f"FolderSource({self.index.path!r}, {len(self)} images, size={self.image_size}, "
                f"channels={self.num_channels})")


def to_float(example: dict) -> dict:
    """``{'image': uint8, 'label'}`` -> the image as float32 in [0, 1] (``x / 255``)."""
    return {"image": np.asarray(example["image"], np.float32) / np.float32(255.0),
            "label": np.asarray(example["label"], np.int32)}
