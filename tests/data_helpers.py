"""Helpers shared by test_data.py and test_data_tfds.py (the input-pipeline tests)."""

from __future__ import annotations

import ml_collections
import numpy as np

from scoresde_jax import data


def make(dataset="CIFAR10", image_size=32, batch_size=4, **kw):
    """``make_dataset`` with the sizes of ``make_config``'s defaults."""
    return data.make_dataset(dataset, image_size=image_size, batch_size=batch_size, **kw)


def make_config(dataset="CIFAR10", image_size=32, batch_size=4, num_channels=3, **data_kw):
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.data = ml_collections.ConfigDict(
        dict(
            dataset=dataset,
            image_size=image_size,
            random_flip=False,
            centered=False,
            uniform_dequantization=False,
            num_channels=num_channels,
        )
    )
    c.data.update(data_kw)
    c.training = ml_collections.ConfigDict(dict(batch_size=batch_size))
    c.eval = ml_collections.ConfigDict(dict(batch_size=batch_size))
    return c


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def image_keys(batches):
    return [hash(im.tobytes()) for b in batches for im in b["image"]]
