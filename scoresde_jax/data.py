"""Input pipelines: TFDS image datasets read without TensorFlow, plus embedded offline data.

One entry point, :func:`get_dataset`, keyed on ``config.data.dataset``:

* ``'CIFAR10'``, ``'CELEBA'``, ``'CelebAHQ'``, ``'LSUN'`` -- the paper's datasets, read from the
  user's TFDS data dir with ``tfds.data_source`` (ArrayRecord, random access) and a Grain
  ``MapDataset`` pipeline. Preprocessing follows the official score_sde ``datasets.py``.
* ``'DIGITS'`` -- scikit-learn's 1797 8x8 handwritten digits (ships with scikit-learn, nothing to
  download), scaled to [0, 1], resized to ``config.data.image_size``, one channel, fixed
  train/test split.
* ``'TOY_8GAUSSIANS'``, ``'TOY_25GAUSSIANS'``, ``'TOY_MOONS'``, ``'TOY_CHECKERBOARD'``,
  ``'TOY_GAUSSIAN'`` -- 2-D Gaussian mixtures with exact parameters
  (``scoresde_jax.analytic.GaussianMixture``, from :func:`get_toy_distribution`), so samplers can be
  checked against exact scores of every diffused marginal (``analytic.exact_score_fn``).

Every dataset yields numpy batches ``{'image': float32, 'label': int32 (B,)}``; images are
``(B, H, W, C)`` in [0, 1] (apply :func:`get_data_scaler` for [-1, 1]); toy batches are ``(B, 2)``.

Determinism and resumption. The pipeline is a Grain ``MapDataset`` whose element ``k`` *is* batch
``k`` of this host (explicit step-indexed sampler): the order is a function of ``(seed, epoch)``
only, shuffled afresh each epoch, and random flips / dequantization noise are drawn from
per-element generators keyed on ``(seed, shard, index)``. :class:`DataIterator` stores nothing but
the step: ``it.get_state() -> {'step': k, ...}`` and ``it.set_state(state)`` (or
``get_dataset(..., start_step=k)``) resume with exactly the batches an unbroken run would see.
The state is a small JSON-able dict (save it with the train state, e.g. ``ocp.args.JsonSave``).

Sharding: each host reads the contiguous block ``[i * n // c, (i + 1) * n // c)`` of the split,
truncated to the same length on every host, with ``i = jax.process_index()``,
``c = jax.process_count()`` unless ``shard=(i, c)`` is given; the global batch size in the config is
divided by ``c``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

import jax
import jax.numpy as jnp

from scoresde_jax.analytic import GaussianMixture, gaussian

__all__ = [
    "DATASETS",
    "DataIterator",
    "DatasetNotFoundError",
    "TOY_DISTRIBUTIONS",
    "central_crop",
    "crop_resize",
    "get_data_inverse_scaler",
    "get_data_scaler",
    "get_dataset",
    "get_toy_distribution",
    "load_digits_images",
    "sample_mixture_np",
    "resize_bilinear",
    "resize_small",
]


class DatasetNotFoundError(FileNotFoundError):
    """A TFDS dataset is not prepared in the data dir; the message says how to prepare it."""


# --------------------------------------------------------------------------------------------
# Scalers (official score_sde names).
# --------------------------------------------------------------------------------------------


def _centered(config_or_centered: Any) -> bool:
    if isinstance(config_or_centered, (bool, np.bool_)):
        return bool(config_or_centered)
    data = getattr(config_or_centered, "data", None)
    if data is not None and hasattr(data, "centered"):
        return bool(data.centered)
    raise TypeError(
        "get_data_scaler/get_data_inverse_scaler take `centered: bool` or a config with "
        f"`config.data.centered`; got {type(config_or_centered).__name__}."
    )


def get_data_scaler(config_or_centered: Any) -> Callable[[Any], Any]:
    """Data normalizer: x in [0, 1] -> 2x - 1 in [-1, 1] if centered, else the identity.

    Accepts ``centered: bool`` or a config with ``config.data.centered`` (official signature).
    """
    if _centered(config_or_centered):
        return lambda x: x * 2.0 - 1.0
    return lambda x: x


def get_data_inverse_scaler(config_or_centered: Any) -> Callable[[Any], Any]:
    """Inverse of :func:`get_data_scaler`: x -> (x + 1) / 2 if centered, else the identity."""
    if _centered(config_or_centered):
        return lambda x: (x + 1.0) / 2.0
    return lambda x: x


# --------------------------------------------------------------------------------------------
# Image ops (numpy + PIL; equivalents of the tf.image calls in score_sde's datasets.py).
# --------------------------------------------------------------------------------------------


def _pil_resize(img: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize a float (H, W, C) image channel by channel in PIL's float mode.

    PIL widens the kernel by the scale factor when shrinking, i.e. it antialiases like
    ``tf.image.resize(..., antialias=True)`` / ``jax.image.resize`` (half-pixel centers).
    """
    from PIL import Image

    h, w = size
    img = np.asarray(img, np.float32)
    chans = [
        np.asarray(Image.fromarray(img[..., c], mode="F").resize((w, h), resample=resample))
        for c in range(img.shape[-1])
    ]
    return np.stack(chans, axis=-1).astype(np.float32)


def resize_bilinear(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Antialiased bilinear resize of a float (H, W, C) image to ``size = (h, w)``."""
    from PIL import Image

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
    from PIL import Image

    h, w = img.shape[:2]
    crop = min(h, w)
    img = img[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]
    out = _pil_resize(img.astype(np.float32), (resolution, resolution), Image.BICUBIC)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (``tf.image.convert_image_dtype``)."""
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Dataset table.
# --------------------------------------------------------------------------------------------


class _TfdsSpec(NamedTuple):
    train_split: str
    eval_split: str
    num_channels: int


TFDS_DATASETS = {
    "CIFAR10": _TfdsSpec("train", "test", 3),
    "CELEBA": _TfdsSpec("train", "validation", 3),
    "CelebAHQ": _TfdsSpec("train", "train", 3),
    "LSUN": _TfdsSpec("train", "validation", 3),
}

_CELEBA_HQ_CONFIGS = (1024, 512, 256, 128, 64, 32, 16, 8, 4, 2, 1)


def _tfds_name(config) -> str:
    name = config.data.dataset
    override = _get(config.data, "tfds_name", None)
    if override:
        return str(override)
    if name == "CIFAR10":
        return "cifar10"
    if name == "CELEBA":
        return "celeb_a"
    if name == "LSUN":
        return f"lsun/{_get(config.data, 'category', 'church_outdoor')}"
    if name == "CelebAHQ":
        size = int(config.data.image_size)
        res = size if size in _CELEBA_HQ_CONFIGS else 1024
        return f"celeb_a_hq/{res}"
    raise AssertionError(name)


def _prepare_instructions(tfds_name: str, data_dir: str | None) -> str:
    dd = data_dir or "~/tensorflow_datasets"
    base = tfds_name.split("/")[0]
    lines = [
        f"TFDS dataset '{tfds_name}' is not prepared in data_dir={dd!r} (nothing is downloaded "
        "at run time). Prepare it once, in ArrayRecord format, with:",
        f"    tfds build {tfds_name} --data_dir {dd} --file_format array_record",
    ]
    if base == "celeb_a_hq":
        lines.append(
            "celeb_a_hq needs a manual download: create the CelebA-HQ images following "
            "https://github.com/tkarras/progressive_growing_of_gans, put them in "
            f"{dd}/downloads/manual/ and add `--manual_dir {dd}/downloads/manual` to the command."
        )
    elif base == "lsun":
        lines.append(
            "lsun downloads from http://dl.yf.io/lsun (often unavailable); if so, download "
            f"'{tfds_name.split('/')[-1]}_train_lmdb.zip' and '..._val_lmdb.zip' by hand into "
            f"{dd}/downloads/manual/ and add `--manual_dir {dd}/downloads/manual`."
        )
    elif base == "celeb_a":
        lines.append(
            "celeb_a downloads from Google Drive, which rate-limits; on failure fetch "
            "img_align_celeba.zip and the list_*.txt files by hand into the manual dir."
        )
    lines.append(
        "The `tfds` command line tool imports TensorFlow: run the one-time build where "
        "`pip install tensorflow-cpu tensorflow-datasets` is installed (reading needs no TF). "
        "Pass the directory to get_dataset(..., data_dir=...) or set TFDS_DATA_DIR."
    )
    return "\n".join(lines)


def _open_tfds_source(tfds_name: str, split: str, data_dir: str | None):
    """Random-access source of decoded examples; clear errors instead of a download attempt."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # noqa: BLE001 -- translated below into an actionable message
        first_error = err
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except Exception as err:  # noqa: BLE001
        raise DatasetNotFoundError(
            _prepare_instructions(tfds_name, data_dir) + f"\n(tfds error: {err})"
        ) from err
    if not prepared:
        raise DatasetNotFoundError(_prepare_instructions(tfds_name, data_dir)) from first_error
    file_format = str(getattr(builder.info, "file_format", "?"))
    if "array_record" not in file_format.lower():
        raise DatasetNotFoundError(
            f"TFDS dataset '{tfds_name}' in {builder.data_dir} is stored as {file_format}, which "
            "has no random access (needed to read it without TensorFlow). Convert it once with\n"
            f"    tfds convert_format --dataset_version_dir {builder.data_dir} "
            "--out_file_format array_record\n"
            "or rebuild it with `tfds build ... --file_format array_record`. With TensorFlow "
            "installed you can also use get_dataset(..., backend='tf')."
        ) from first_error
    raise first_error


def _resolve_split(config, split: str) -> str:
    spec = TFDS_DATASETS[config.data.dataset]
    if split == "train":
        return spec.train_split
    if split in ("eval", "test", "validation"):
        return spec.eval_split
    return split  # a raw TFDS split string, e.g. 'train[:90%]'


def _tfds_preprocess_fn(config, image_size: int) -> Callable[[Mapping[str, Any]], dict]:
    """Deterministic part of the official preprocessing: crop/resize, scale to [0, 1]."""
    name = config.data.dataset

    if name == "CIFAR10":

        def resize_op(img):
            return resize_bilinear(_to_float(img), (image_size, image_size))

    elif name == "CELEBA":

        def resize_op(img):
            return resize_small(central_crop(_to_float(img), 140), image_size)

    elif name == "LSUN":
        if image_size == 128:

            def resize_op(img):
                return central_crop(resize_small(_to_float(img), image_size), image_size)

        else:

            def resize_op(img):
                return _to_float(crop_resize(np.asarray(img), image_size))

    elif name == "CelebAHQ":

        def resize_op(img):
            img = _to_float(img)
            if img.shape[:2] != (image_size, image_size):
                img = central_crop(resize_small(img, image_size), image_size)
            return img

    else:  # pragma: no cover
        raise AssertionError(name)

    def preprocess(example):
        img = resize_op(example["image"])
        label = np.asarray(example.get("label", 0), np.int32)
        return {"image": img.astype(np.float32), "label": label}

    return preprocess


def _augment_fn(*, random_flip: bool, uniform_dequantization: bool):
    """Random part: horizontal flip with prob 1/2; (255 x + U[0,1)) / 256 dequantization."""

    def augment(example, rng: np.random.Generator):
        img = example["image"]
        if random_flip and rng.random() < 0.5:
            img = img[:, ::-1]
        if uniform_dequantization:
            u = rng.random(img.shape, dtype=np.float32)
            img = (u + img * 255.0) / 256.0
        return {"image": np.ascontiguousarray(img, np.float32), "label": example["label"]}

    return augment


# --------------------------------------------------------------------------------------------
# Embedded digits.
# --------------------------------------------------------------------------------------------

DIGITS_NUM_TEST = 360  # fixed held-out split: 1437 train / 360 test, stratified, seed 0


@functools.lru_cache(maxsize=None)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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
        raise ValueError(
            f"DIGITS needs config.data.image_size >= 8 (native 8x8), got {image_size}."
        )
    return _digits_cached("train" if split == "train" else "test", image_size, method)


class _ArraySource(Sequence):
    """Random-access source over in-memory (images, labels) arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self._images, self._labels = images, labels

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, i):
        return {"image": self._images[i], "label": self._labels[i]}


# --------------------------------------------------------------------------------------------
# 2-D toy distributions: Gaussian mixtures with exact parameters.
# They are ``scoresde_jax.analytic.GaussianMixture``s, so ``analytic.exact_score_fn(mix, sde)``
# gives the exact score of every diffused marginal p_t = sum_k w_k N(a mu_k, a^2 Sigma_k + s^2 I).
# --------------------------------------------------------------------------------------------


def _isotropic(means: np.ndarray, std: float) -> GaussianMixture:
    means = np.asarray(means, np.float64)
    k, d = means.shape
    dtype = jnp.result_type(float)
    covs = np.broadcast_to(std**2 * np.eye(d), (k, d, d))
    return GaussianMixture(
        jnp.full((k,), 1.0 / k, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype), (d,)
    )


def eight_gaussians(*, radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """8 equal-weight isotropic Gaussians at angles 2 pi k / 8 on a circle of ``radius``."""
    ang = 2.0 * np.pi * np.arange(8) / 8
    return _isotropic(radius * np.stack([np.cos(ang), np.sin(ang)], -1), std)


def grid_gaussians(*, n: int = 5, spacing: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """n x n equal-weight isotropic Gaussians on a grid centered at the origin (25 for n=5)."""
    c = (np.arange(n) - (n - 1) / 2) * spacing
    gx, gy = np.meshgrid(c, c, indexing="ij")
    return _isotropic(np.stack([gx.ravel(), gy.ravel()], -1), std)


def two_moons(*, per_moon: int = 16, std: float = 0.1) -> GaussianMixture:
    """Two interleaved half circles (sklearn ``make_moons`` geometry, centered) as a mixture of
    ``2 * per_moon`` isotropic Gaussians spaced along the arcs."""
    t = np.linspace(0.0, np.pi, per_moon)
    upper = np.stack([np.cos(t), np.sin(t)], -1)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], -1)
    return _isotropic(np.concatenate([upper, lower]) - np.array([0.5, 0.25]), std)


def checkerboard(*, n: int = 4, sub: int = 3, std: float = 0.15) -> GaussianMixture:
    """Checkerboard on [-n/2, n/2]^2: each of the n^2/2 dark unit squares is covered by a
    ``sub x sub`` grid of isotropic Gaussians (so the density is an exact mixture)."""
    off = (np.arange(sub) + 0.5) / sub
    means = []
    for i in range(n):
        for j in range(n):
            if (i + j) % 2 == 0:
                for u in off:
                    for v in off:
                        means.append((i + u - n / 2, j + v - n / 2))
    return _isotropic(np.array(means), std)


def single_gaussian(
    *,
    mean: Sequence[float] = (1.0, -0.5),
    cov: Sequence[Sequence[float]] = ((1.0, 0.6), (0.6, 0.5)),
) -> GaussianMixture:
    """One correlated 2-D Gaussian (the simplest exact-score test case)."""
    dtype = jnp.result_type(float)
    return gaussian(jnp.asarray(mean, dtype), jnp.asarray(cov, dtype))


def sample_mixture_np(
    mix: GaussianMixture, rng: np.random.Generator | int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` exact samples in numpy (input pipelines): ``(x (n, D) float32, component (n,))``."""
    rng = np.random.default_rng(rng)
    w = np.asarray(mix.weights, np.float64)
    means = np.asarray(mix.means, np.float64)
    chol = np.linalg.cholesky(np.asarray(mix.covs, np.float64))
    comp = rng.choice(len(w), size=n, p=w / w.sum())
    z = rng.standard_normal((n, means.shape[1]))
    x = means[comp] + np.einsum("nij,nj->ni", chol[comp], z)
    return x.astype(np.float32), comp.astype(np.int32)


TOY_DISTRIBUTIONS: dict[str, Callable[[], GaussianMixture]] = {
    "TOY_8GAUSSIANS": eight_gaussians,
    "TOY_25GAUSSIANS": grid_gaussians,
    "TOY_MOONS": two_moons,
    "TOY_CHECKERBOARD": checkerboard,
    "TOY_GAUSSIAN": single_gaussian,
}


def get_toy_distribution(name: str) -> GaussianMixture:
    """The exact mixture behind a ``'TOY_*'`` dataset name."""
    if name not in TOY_DISTRIBUTIONS:
        raise ValueError(f"Unknown toy dataset {name!r}; valid: {sorted(TOY_DISTRIBUTIONS)}.")
    return TOY_DISTRIBUTIONS[name]()


# --------------------------------------------------------------------------------------------
# Iterator.
# --------------------------------------------------------------------------------------------

DATASETS = tuple(TFDS_DATASETS) + ("DIGITS",) + tuple(TOY_DISTRIBUTIONS)


def _seed_int(*parts: Any) -> int:
    """A 32-bit seed (Grain's range) derived from the given parts, stable across runs."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:4], "little")


class DataIterator(Iterator[dict]):
    """Checkpointable iterator of numpy batches over a step-indexed Grain ``MapDataset``.

    ``dataset[k]`` is batch ``k`` of this host; iteration yields ``dataset[step]``,
    ``dataset[step + 1]``, ... (prefetched by Grain threads). ``get_state()`` returns
    ``{'step': k, 'fingerprint': ...}``; ``set_state`` restarts at step ``k``, so a resumed run sees
    exactly the batches of an unbroken one. The fingerprint (dataset, split, seed, shard, batch
    size, image size) guards against restoring a state into a differently configured pipeline.
    """

    def __init__(
        self,
        dataset,
        *,
        fingerprint: str,
        start_step: int = 0,
        num_threads: int = 4,
        prefetch: int = 8,
        info: Mapping[str, Any] | None = None,
    ):
        self.dataset = dataset
        self.fingerprint = fingerprint
        self.info = dict(info or {})
        self._num_threads = int(num_threads)
        self._prefetch = int(prefetch)
        self._restart(int(start_step))

    def _restart(self, step: int) -> None:
        import grain

        if step < 0:
            raise ValueError(f"DataIterator step must be >= 0, got {step}.")
        self._step = step
        opts = grain.ReadOptions(num_threads=self._num_threads, prefetch_buffer_size=self._prefetch)
        self._it = iter(self.dataset[step:].to_iter_dataset(opts))

    @property
    def step(self) -> int:
        """Index of the next batch to be returned."""
        return self._step

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> "DataIterator":
        return self

    def __next__(self) -> dict:
        batch = next(self._it)
        self._step += 1
        return batch

    def get_state(self) -> dict:
        """JSON-able state: ``{'step': int, 'fingerprint': str}``."""
        return {"step": self._step, "fingerprint": self.fingerprint}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Resume at ``state['step']``; checks the fingerprint when present."""
        fp = state.get("fingerprint")
        if fp is not None and fp != self.fingerprint:
            raise ValueError(
                f"Data iterator state was saved for pipeline {fp!r} but this pipeline is "
                f"{self.fingerprint!r}; use the same dataset, split, seed, shard and batch size."
            )
        self._restart(int(state["step"]))


def _array_batches(
    source: _ArraySource, start: int, n: int, batch: int, *, shuffle: bool,
    num_epochs: int | None, shuffle_seed: int, augment_seed: int, random_flip: bool,
    uniform_dequantization: bool,
):
    """Step-indexed batches over in-memory arrays, same semantics as the per-example pipeline.

    Positions ``p = k * batch + j`` of the repeated stream map to epoch ``p // n`` and example
    ``perm_epoch[p % n]`` of this host's block ``[start, start + n)``; ``perm_epoch`` is a
    permutation seeded by ``(shuffle_seed, epoch)``. Augmentation draws from a generator seeded by
    ``(augment_seed, k)``.
    """
    import grain

    images, labels = source._images, source._labels

    @functools.lru_cache(maxsize=4)
    def order(epoch: int) -> np.ndarray:
        if not shuffle:
            return np.arange(n)
        return np.random.default_rng([shuffle_seed, epoch]).permutation(n)

    def make_batch(k: int) -> dict:
        pos = int(k) * batch + np.arange(batch)
        epochs, within = np.divmod(pos, n)
        idx = np.empty(batch, np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            idx[sel] = order(int(e))[within[sel]]
        idx += start
        img = np.array(images[idx], np.float32)
        if random_flip or uniform_dequantization:
            rng = np.random.default_rng([augment_seed, int(k)])
            if random_flip:
                flip = rng.random(batch) < 0.5
                img[flip] = img[flip, :, ::-1]
            if uniform_dequantization:
                img = (rng.random(img.shape, dtype=np.float32) + img * 255.0) / 256.0
        return {"image": img, "label": np.asarray(labels[idx], np.int32)}

    num_batches = 2**62 if num_epochs is None else (n * int(num_epochs)) // batch
    return grain.MapDataset.range(0, num_batches).map(make_batch)


# --------------------------------------------------------------------------------------------
# Entry point.
# --------------------------------------------------------------------------------------------


def _get(section, key: str, default: Any) -> Any:
    try:
        return section[key] if key in section else default
    except TypeError:
        return getattr(section, key, default)


def _per_host_batch_size(config, split: str, count: int, batch_size: int | None) -> int:
    if batch_size is None:
        section = config.training if split == "train" else config.eval
        batch_size = int(section.batch_size)
    if batch_size <= 0:
        raise ValueError(f"Batch size must be positive, got {batch_size}.")
    if batch_size % count:
        which = "config.training.batch_size" if split == "train" else "config.eval.batch_size"
        raise ValueError(
            f"Batch size {batch_size} ({which}) is not divisible by the number of hosts "
            f"(process count / shard count) {count}; choose a multiple of {count}."
        )
    return batch_size // count


def get_dataset(
    config,
    *,
    split: str = "train",
    seed: int | None = None,
    shard: tuple[int, int] | None = None,
    data_dir: str | None = None,
    batch_size: int | None = None,
    uniform_dequantization: bool | None = None,
    shuffle: bool | None = None,
    num_epochs: int | None | str = "auto",
    start_step: int = 0,
    num_threads: int | None = None,
    backend: str = "grain",
) -> DataIterator:
    """Iterator of numpy batches ``{'image', 'label'}`` for ``config.data.dataset``.

    Args:
      config: ml_collections config (official score_sde layout): ``data.dataset``,
        ``data.image_size``, ``data.random_flip``, ``data.uniform_dequantization``,
        ``data.num_channels`` (checked), ``data.category`` (LSUN), ``data.tfds_name`` (optional
        override of the TFDS name), ``data.digits_resize`` (DIGITS: 'bilinear' (default),
        'nearest', 'pad'), ``training.batch_size`` /
        ``eval.batch_size`` (global, over all hosts), ``seed``.
      split: ``'train'`` or ``'eval'``/``'test'`` (the dataset's evaluation split: CIFAR-10 test,
        CelebA/LSUN validation, CelebA-HQ train), or a raw TFDS split string.
      seed: order/augmentation seed; defaults to ``config.seed`` (or 0).
      shard: ``(index, count)``; defaults to ``(jax.process_index(), jax.process_count())``
        (which starts the JAX backend: call ``jax.distributed.initialize()`` before, or pass it).
      data_dir: TFDS data dir (defaults to TFDS's own: ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets).
      batch_size: global batch size override.
      uniform_dequantization: override ``config.data.uniform_dequantization``.
      shuffle: shuffle each epoch (default: True for train, False for eval).
      num_epochs: ``None`` repeats forever; default ``'auto'``: forever for train, 1 for eval.
      start_step: first batch index (resumption; same as ``set_state({'step': start_step})``).
      num_threads: Grain reader threads (default 4 for TFDS, 0 for in-memory data).
      backend: ``'grain'`` (default, no TensorFlow) or ``'tf'`` (tf.data fallback for datasets
        stored as TFRecord; needs TensorFlow; not checkpointable beyond ``start_step``).

    Images are ``(B, H, W, C)`` float32 in [0, 1] (before :func:`get_data_scaler`); toy batches
    are ``(B, 2)`` with the mixture component as label. Each host gets ``global_batch / count``
    examples; the last incomplete batch is dropped.
    """
    name = config.data.dataset
    if name not in DATASETS:
        raise ValueError(f"Unknown config.data.dataset {name!r}; valid names: {list(DATASETS)}.")
    is_train = split == "train"
    if shard is None:
        shard = (jax.process_index(), jax.process_count())
    index, count = (int(s) for s in shard)
    if not 0 <= index < count:
        raise ValueError(f"shard=(index, count) needs 0 <= index < count, got {shard}.")
    per_host = _per_host_batch_size(config, split, count, batch_size)
    if seed is None:
        seed = int(_get(config, "seed", 0))
    if uniform_dequantization is None:
        uniform_dequantization = bool(_get(config.data, "uniform_dequantization", False))
    random_flip = bool(_get(config.data, "random_flip", False)) and is_train
    if shuffle is None:
        shuffle = is_train
    if num_epochs == "auto":
        num_epochs = None if is_train or name in TOY_DISTRIBUTIONS else 1
    image_size = int(_get(config.data, "image_size", 0))
    fingerprint = (
        f"{name}|{split}|seed={seed}|shard={index}/{count}|batch={per_host}|size={image_size}"
        f"|flip={random_flip}|deq={uniform_dequantization}|shuffle={shuffle}|epochs={num_epochs}"
    )
    info = {
        "dataset": name, "split": split, "per_host_batch_size": per_host, "shard": (index, count)
    }

    import grain

    if name in TOY_DISTRIBUTIONS:
        gmm = get_toy_distribution(name)
        base = _seed_int("toy", seed, split, index, count)

        def toy_batch(k):
            x, comp = sample_mixture_np(gmm, np.random.default_rng([base, int(k)]), per_host)
            return {"image": x, "label": comp}

        ds = grain.MapDataset.range(0, 2**62).map(toy_batch)
        if num_epochs is not None:  # an "epoch" has no meaning for an infinite generator
            raise ValueError(f"{name} is an infinite generator; use num_epochs=None.")
        info["distribution"] = gmm
        return DataIterator(
            ds, fingerprint=fingerprint, start_step=start_step, num_threads=num_threads or 0,
            info=info,
        )

    num_channels = 1 if name == "DIGITS" else TFDS_DATASETS[name].num_channels
    cfg_channels = _get(config.data, "num_channels", None)
    if cfg_channels is not None and int(cfg_channels) != num_channels:
        raise ValueError(
            f"config.data.num_channels={cfg_channels} but {name} has {num_channels} channel(s); "
            f"set config.data.num_channels = {num_channels}."
        )
    if image_size <= 0:
        raise ValueError(f"config.data.image_size must be positive, got {image_size}.")

    if name == "DIGITS":
        method = str(_get(config.data, "digits_resize", "bilinear"))
        images, labels = load_digits_images(split if split != "eval" else "test",
                                            image_size=image_size, method=method)
        source: Sequence = _ArraySource(images, labels)
        preprocess = None
        threads = 0 if num_threads is None else num_threads
    else:
        tfds_name = _tfds_name(config)
        tfds_split = _resolve_split(config, split)
        if backend == "tf":
            return _tf_fallback(config, tfds_name, tfds_split, data_dir=data_dir, seed=seed,
                                shard=(index, count), per_host=per_host, shuffle=shuffle,
                                num_epochs=num_epochs, random_flip=random_flip,
                                uniform_dequantization=uniform_dequantization,
                                start_step=start_step, fingerprint=fingerprint, info=info)
        if backend != "grain":
            raise ValueError(f"backend must be 'grain' or 'tf', got {backend!r}.")
        source = _open_tfds_source(tfds_name, tfds_split, data_dir)
        preprocess = _tfds_preprocess_fn(config, image_size)
        threads = 4 if num_threads is None else num_threads
        info["tfds_name"], info["tfds_split"] = tfds_name, tfds_split

    n = len(source)
    per_shard = n // count
    if per_shard < per_host:
        raise ValueError(
            f"{name} split {split!r} has {n} examples: {per_shard} per host for {count} host(s), "
            f"fewer than one per-host batch of {per_host}."
        )
    info["examples_per_host"] = per_shard
    if isinstance(source, _ArraySource):  # in memory: whole batches by vectorized indexing
        ds = _array_batches(
            source, index * per_shard, per_shard, per_host, shuffle=shuffle,
            num_epochs=num_epochs, shuffle_seed=_seed_int("shuffle", seed),
            augment_seed=_seed_int("augment", seed, index, count), random_flip=random_flip,
            uniform_dequantization=uniform_dequantization,
        )
        return DataIterator(ds, fingerprint=fingerprint, start_step=start_step,
                            num_threads=threads, info=info)
    ds = grain.MapDataset.source(source)[index * per_shard : (index + 1) * per_shard]
    if shuffle:
        ds = ds.shuffle(seed=_seed_int("shuffle", seed))
    ds = ds.repeat(num_epochs)
    if preprocess is not None:
        ds = ds.map(preprocess)
    if random_flip or uniform_dequantization:
        ds = ds.random_map(
            _augment_fn(random_flip=random_flip, uniform_dequantization=uniform_dequantization),
            seed=_seed_int("augment", seed, index, count),
        )
    ds = ds.batch(per_host, drop_remainder=True)
    return DataIterator(ds, fingerprint=fingerprint, start_step=start_step, num_threads=threads,
                        info=info)


class _TfIterator(DataIterator):
    """tf.data fallback: a plain iterator; ``set_state`` replays from the start (slow resume)."""

    def __init__(self, make_iter, *, fingerprint, start_step, info):
        self._make_iter = make_iter
        self.dataset = None
        self.fingerprint = fingerprint
        self.info = dict(info)
        self._restart(int(start_step))

    def _restart(self, step: int) -> None:
        self._it = self._make_iter(step)
        self._step = step

    def __len__(self) -> int:  # pragma: no cover
        raise TypeError("The tf.data fallback has no length.")


def _tf_fallback(config, tfds_name, tfds_split, *, data_dir, seed, shard, per_host, shuffle,
                 num_epochs, random_flip, uniform_dequantization, start_step, fingerprint, info):
    """Optional path for TFRecord-only datasets when TensorFlow is installed (not tested in CI)."""
    try:
        import tensorflow as tf  # noqa: F401
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "backend='tf' needs TensorFlow (`pip install tensorflow-cpu`); without it convert the "
            "dataset to ArrayRecord (`tfds convert_format ...`) and use the default backend."
        ) from err
    index, count = shard
    preprocess = _tfds_preprocess_fn(config, int(config.data.image_size))
    augment = _augment_fn(random_flip=random_flip, uniform_dequantization=uniform_dequantization)
    aug_seed = _seed_int("augment", seed, index, count)

    def make_iter(step):
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            raise DatasetNotFoundError(_prepare_instructions(tfds_name, data_dir))
        read_config = tfds.ReadConfig(shuffle_seed=seed)
        ds = builder.as_dataset(split=tfds_split, shuffle_files=shuffle, read_config=read_config)
        ds = ds.shard(count, index)
        ds = ds.repeat(num_epochs)
        if shuffle:
            ds = ds.shuffle(10000, seed=seed, reshuffle_each_iteration=True)

        def gen():
            k = 0
            buf = []
            for ex in tfds.as_numpy(ds):
                e = preprocess(ex)
                if random_flip or uniform_dequantization:
                    e = augment(e, np.random.default_rng([aug_seed, k]))
                buf.append(e)
                k += 1
                if len(buf) == per_host:
                    yield {key: np.stack([b[key] for b in buf]) for key in ("image", "label")}
                    buf = []

        it = gen()
        for _ in range(step):
            next(it)
        return it

    return _TfIterator(make_iter, fingerprint=fingerprint, start_step=start_step, info=info)
