"""What a job knows about its data, as plain values: :class:`DataSpec`.

The config boundary builds one ``DataSpec`` per run (:func:`scoresde_jax.config.setup`); jobs
open iterators and whole-split readers from it without seeing the config. Two 8-bit conversions
live here, each for its own purpose:

* :func:`quantize_samples` -- generated samples in [0, 1] -> uint8 as the paper's code does,
  ``trunc(clip(255 x, 0, 255))``;
* :func:`stored_pixels` -- dataset images in [0, 1] -> the uint8 pixels they were read from,
  ``round(255 x)`` (truncation would turn ``k / 255`` computed in float32 into ``k - 1``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from scoresde_jax.data.images import inverse_scaler, scaler
from scoresde_jax.data.pipeline import DataIterator, make_dataset
from scoresde_jax.data.toy import example_shape, is_vector_dataset

__all__ = ["DataSpec", "quantize_samples", "stored_pixels"]


def quantize_samples(images: Any) -> np.ndarray:
    """Samples in [0, 1] -> uint8 as the paper's code: ``trunc(clip(255 x, 0, 255))``."""
    return np.clip(np.asarray(images, np.float32) * 255.0, 0.0, 255.0).astype(np.uint8)


def stored_pixels(images: Any) -> np.ndarray:
    """Dataset images in [0, 1] -> their 8-bit pixels, ``round(255 x)``."""
    return np.rint(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A dataset and how a run reads it: ``name`` (:data:`scoresde_jax.data.DATASETS`),
    ``centered`` (the model sees ``2x - 1``), the global ``train_batch`` / ``eval_batch`` sizes, the
    order ``seed`` and the remaining :func:`~scoresde_jax.data.make_dataset` options
    (``image_size``, ``num_channels``, ``random_flip``, ``uniform_dequantization``, ...)."""

    name: str
    centered: bool = False
    train_batch: int = 0
    eval_batch: int = 0
    seed: int = 0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def vector(self) -> bool:
        """True for vector data (the ``TOY_*`` mixtures): batches ``(B, D)``, never rescaled."""
        return is_vector_dataset(self.name)

    @property
    def example_shape(self) -> tuple[int, ...]:
        return example_shape(self.name, image_size=int(self.options.get("image_size", 0)),
                             num_channels=int(self.options.get("num_channels", 3)))

    @property
    def uniform_dequantization(self) -> bool:
        return bool(self.options.get("uniform_dequantization", False))

    def scaler(self) -> Callable[[Any], Any]:
        """``x -> 2x - 1`` for centered images, else the identity."""
        return (lambda x: x) if self.vector else scaler(self.centered)

    def inverse_scaler(self) -> Callable[[Any], Any]:
        """The inverse of :meth:`scaler`."""
        return (lambda x: x) if self.vector else inverse_scaler(self.centered)

    def dataset(self, *, split: str = "train", batch_size: int | None = None,
                seed: int | None = None, **kwargs: Any) -> DataIterator:
        """:func:`~scoresde_jax.data.make_dataset` of this dataset: the train batch size for
        ``split='train'``, else the eval batch size, unless ``batch_size`` is given; ``kwargs``
        override the spec's options (``shard``, ``data_dir``, ``shuffle``, ``num_epochs``, ...)."""
        if batch_size is None:
            batch_size = self.train_batch if split == "train" else self.eval_batch
        options = {**self.options, **kwargs}
        return make_dataset(self.name, split=split, batch_size=int(batch_size),
                            seed=self.seed if seed is None else int(seed), **options)

    def split_reader(self, split: str, *, batch_size: int, data_dir: str | None = None,
                     num_examples: int | None = None
                     ) -> tuple[int, Callable[[int, int], np.ndarray]]:
        """``(num_examples, read)``: ``read(k, n)`` gives examples ``[k B, k B + n)`` of ``split``
        (images in [0, 1] ``(n, H, W, C)`` or vectors ``(n, D)``) in order, without flips or
        dequantization, the last short batch included. Generated toy data have no size: pass
        ``num_examples``."""
        kw = dict(shuffle=False, data_dir=data_dir, uniform_dequantization=False,
                  random_flip=False, shard=(0, 1))
        if self.vector:
            if num_examples is None:
                raise ValueError("a generated toy dataset has no fixed split size; pass "
                                 "--num_examples (or config.eval.num_samples).")
            it = self.dataset(split=split, batch_size=batch_size, **kw)
            return int(num_examples), lambda k, n: np.asarray(it.dataset[k]["image"])[:n]
        it = self.dataset(split=split, batch_size=batch_size, num_epochs=1, **kw)
        total = int(it.info.get("examples_per_host", len(it) * batch_size))
        if num_examples is not None:
            total = min(total, int(num_examples))
        full = len(it)
        single: list[DataIterator] = []

        def read(k: int, n: int) -> np.ndarray:
            if k < full:
                return np.asarray(it.dataset[k]["image"])[:n]
            if not single:  # the tail that batch_size drops: one example at a time
                single.append(self.dataset(split=split, batch_size=1, num_epochs=1, **kw))
            return np.concatenate([np.asarray(single[0].dataset[k * batch_size + j]["image"])
                                   for j in range(n)])

        return total, read
