"""Input pipelines: TFDS image datasets read without TensorFlow, plus embedded offline data.

One entry point, :func:`make_dataset` (``pipeline``), taking plain arguments:

* ``'CIFAR10'``, ``'CELEBA'``, ``'CelebAHQ'``, ``'LSUN'`` -- the paper's datasets from the user's
  TFDS data dir (``tfds``), preprocessed as the official score_sde ``datasets.py`` (``images``).
* ``'DIGITS'`` -- scikit-learn's 1797 8x8 handwritten digits, nothing to download (``digits``).
* ``'folder'`` -- your own images: a folder or ``.zip`` of PNG / JPEG / WebP files, labels from
  class subfolders or an EDM ``dataset.json`` (``folder``: the index; ``folder_source``: decoding).
* ``'TOY_8GAUSSIANS'``, ``'TOY_25GAUSSIANS'``, ``'TOY_MOONS'``, ``'TOY_CHECKERBOARD'``,
  ``'TOY_GAUSSIAN'`` -- 2-D Gaussian mixtures with exact parameters and scores (``toy``).

The official names that read a config (``get_dataset(config, ...)``, ``get_data_scaler``,
``get_data_inverse_scaler``) live at the config boundary, :mod:`scoresde_jax.config`.
"""

from __future__ import annotations

from scoresde_jax.data.digits import load_digits_images
from scoresde_jax.data.folder import FolderIndex, check_labels, folder_class_names, index_folder
from scoresde_jax.data.folder_source import FolderSource, decode_image
from scoresde_jax.data.images import (
    central_crop, crop_resize, inverse_scaler, resize_bilinear, resize_small, scaler,
)
from scoresde_jax.data.pipeline import DATASETS, FOLDER, DataIterator, make_dataset
from scoresde_jax.data.tfds import DatasetNotFoundError
from scoresde_jax.data.toy import (
    TOY_DISTRIBUTIONS, example_shape, get_toy_distribution, is_vector_dataset, sample_mixture_np,
)

__all__ = [
    "DATASETS",
    "DataIterator",
    "DatasetNotFoundError",
    "FOLDER",
    "FolderIndex",
    "FolderSource",
    "TOY_DISTRIBUTIONS",
    "central_crop",
    "check_labels",
    "crop_resize",
    "decode_image",
    "example_shape",
    "folder_class_names",
    "get_toy_distribution",
    "index_folder",
    "inverse_scaler",
    "is_vector_dataset",
    "load_digits_images",
    "make_dataset",
    "resize_bilinear",
    "resize_small",
    "sample_mixture_np",
    "scaler",
]
