"""Metric and image writers: a JSONL file, TensorBoard event files (tensorboardX), PNG grids of
image samples and scatter plots of 2-D samples.

Only the main process writes (``jax.process_index() == 0``); on the others the writer is a no-op, so
multi-host runs produce one set of logs.
"""

from __future__ import annotations

import json
import math
import os
import logging
import time
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageDraw
from tensorboardX import SummaryWriter


def image_grid(images: np.ndarray, *, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile ``(N, H, W, C)`` images in ``[0, 1]`` into one ``(H', W', C)`` uint8 grid (``nrow`` per row)."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"image_grid expects (N, H, W, C) images, got shape {images.shape}.")
    n, h, w, c = images.shape
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    ncol = int(math.ceil(n / nrow))
    grid = np.ones((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c))
    for i in range(n):
        r, q = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)


def save_image_grid(images: np.ndarray, path: str, *, nrow: int | None = None, scale: int = 1) -> str:
    """Write a PNG grid of ``(N, H, W, C)`` images in ``[0, 1]``; ``scale`` upsamples small images."""
    grid = image_grid(images, nrow=nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    return path


def scatter_png(panels: Mapping[str, np.ndarray], path: str, *, size: int = 320,
                lim: float = 3.5) -> str:
    """Side-by-side titled scatter plots of 2-D point sets (``panels[title] = (N, 2)``) on
    ``[-lim, lim]^2``, drawn with Pillow (no plotting dependency)."""
    img = Image.new("RGB", (size * len(panels), size + 20), "white")
    draw = ImageDraw.Draw(img)
    for k, (title, pts) in enumerate(panels.items()):
        x0 = k * size
        draw.rectangle([x0 + 1, 21, x0 + size - 2, size + 18], outline=(180, 180, 180))
        draw.text((x0 + 8, 4), title, fill="black")
        uv = (np.asarray(pts, np.float64) + lim) / (2 * lim) * (size - 4)
        for u, v in uv:
            if 0 <= u < size - 4 and 0 <= v < size - 4:
                cx, cy = x0 + 2 + u, 20 + size - 2 - v
                draw.ellipse([cx - 1, cy - 1, cx + 1, cy + 1], fill=(30, 80, 200))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
    return path


def save_samples(samples: np.ndarray, path: str) -> str:
    """Samples as a PNG (a grid for images ``(N, H, W, C)`` in ``[0, 1]``, a scatter plot for 2-D
    vectors ``(N, 2)``) plus the raw array beside it (``.npy``); returns the PNG path."""
    samples = np.asarray(samples)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.save(os.path.splitext(path)[0] + ".npy", samples)
    if samples.ndim == 2 and samples.shape[1] == 2:
        scatter_png({"samples": samples}, path)  # the TOY_* mixtures lie within [-3, 3]^2
    elif samples.ndim == 2:
        logging.getLogger(__name__).warning(
            "No PNG for %d-D vector samples (only 2-D is plotted); see the .npy file.",
            samples.shape[1])
    else:
        save_image_grid(samples, path, scale=max(1, 64 // samples.shape[1]))
    return path


def _scalar(v: Any) -> float:
    return float(np.asarray(v).reshape(-1)[-1])


class MetricWriter:
    """Scalars to ``<logdir>/metrics.jsonl`` and TensorBoard; images to TensorBoard. No-op if not ``active``."""

    def __init__(self, logdir: str, *, active: bool = True, tensorboard: bool = True):
        self.logdir = os.path.abspath(logdir)
        self.active = active
        self._jsonl = None
        self._tb = None
        if not active:
            return
        os.makedirs(self.logdir, exist_ok=True)
        self.jsonl_path = os.path.join(self.logdir, "metrics.jsonl")
        self._jsonl = open(self.jsonl_path, "a", buffering=1)
        if tensorboard:
            self._tb = SummaryWriter(self.logdir)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.active:
            return
        values = {k: _scalar(v) for k, v in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **values}) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, int(step))

    def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
        """``images[name]``: an ``(N, H, W, C)`` batch in [0, 1], written as one grid."""
        if not self.active or self._tb is None:
            return
        for k, v in images.items():
            self._tb.add_image(k, image_grid(v), int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str) -> list[dict]:
    """The records of a ``metrics.jsonl`` file (for tests and scripts)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
