"""Metric and image writers: a JSONL file, TensorBoard event files (tensorboardX) and PNG grids.

Only the main process writes (``jax.process_index() == 0``); on the others the writer is a no-op, so
multi-host runs produce one set of logs.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import numpy as np


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
    from PIL import Image

    grid = image_grid(images, nrow=nrow)
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
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
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(self.logdir)
            except ImportError:  # tensorboardX is optional; the JSONL file is always written
                self._tb = None

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
