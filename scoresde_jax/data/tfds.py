"""The paper's image datasets (CIFAR-10, CelebA, CelebA-HQ, LSUN) from TFDS, without TensorFlow.

Examples are read with ``tfds.data_source`` (ArrayRecord, random access) from the user's TFDS data
dir; nothing is downloaded at run time, and a missing dataset raises
:class:`DatasetNotFoundError` with the ``tfds build`` command that prepares it. Preprocessing
follows the official score_sde ``datasets.py``: a deterministic crop/resize to [0, 1]
(:func:`preprocess_fn`) and the random flip / uniform dequantization (:func:`augment_fn`).
:func:`tf_batches` is the optional tf.data path for datasets stored as TFRecord (needs TensorFlow).
:func:`write_array_record` writes encoded images as a TFDS dataset in ArrayRecord format, what
``tfds build`` makes, without TensorFlow (tests, benchmarks, data prepared once).
Every function takes plain arguments; :func:`scoresde_jax.data.make_dataset` wires them together.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from scoresde_jax.data.images import (
    to_float, central_crop, crop_resize, resize_bilinear, resize_small,
)

__all__ = [
    "DatasetNotFoundError",
    "TFDS_DATASETS",
    "augment_fn",
    "open_source",
    "preprocess_fn",
    "resolve_split",
    "tf_batches",
    "tfds_name",
    "write_array_record",
]


class DatasetNotFoundError(FileNotFoundError):
    """A TFDS dataset is not prepared in the data dir; the message says how to prepare it."""


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


def tfds_name(
    dataset: str, *, image_size: int, category: str | None = None, override: str | None = None
) -> str:
    """TFDS name of ``dataset``: ``cifar10``, ``celeb_a``, ``lsun/<category>`` (default
    ``church_outdoor``), ``celeb_a_hq/<image_size>`` (1024 for sizes TFDS has no config for);
    ``override`` (if given) wins."""
    if override:
        return str(override)
    if dataset == "CIFAR10":
        return "cifar10"
    if dataset == "CELEBA":
        return "celeb_a"
    if dataset == "LSUN":
        return f"lsun/{category or 'church_outdoor'}"
    if dataset == "CelebAHQ":
        size = int(image_size)
        return f"celeb_a_hq/{size if size in _CELEBA_HQ_CONFIGS else 1024}"
    raise ValueError(f"{dataset!r} is not a TFDS dataset; valid: {list(TFDS_DATASETS)}.")


def resolve_split(dataset: str, split: str) -> str:
    """``'train'`` -> the train split; ``'eval'``/``'test'``/``'validation'`` -> the dataset's
    evaluation split (CIFAR-10 test, CelebA/LSUN validation, CelebA-HQ train); any other string
    is a raw TFDS split (e.g. ``'train[:90%]'``)."""
    spec = TFDS_DATASETS[dataset]
    if split == "train":
        return spec.train_split
    if split in ("eval", "test", "validation"):
        return spec.eval_split
    return split


def _prepare_instructions(name: str, data_dir: str | None) -> str:
    dd = data_dir or "~/tensorflow_datasets"
    base = name.split("/")[0]
    lines = [
        f"TFDS dataset '{name}' is not prepared in data_dir={dd!r} (nothing is downloaded "
        "at run time). Prepare it once, in ArrayRecord format, with:",
        f"    tfds build {name} --data_dir {dd} --file_format array_record",
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
            f"'{name.split('/')[-1]}_train_lmdb.zip' and '..._val_lmdb.zip' by hand into "
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


def open_source(name: str, split: str, data_dir: str | None):
    """Random-access source of decoded examples; clear errors instead of a download attempt."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 -- seconds to import; only TFDS runs need it

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # noqa: BLE001 -- translated below into an actionable message
        first_error = err
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        prepared = builder.is_prepared()
    except Exception as err:  # noqa: BLE001
        raise DatasetNotFoundError(
            _prepare_instructions(name, data_dir) + f"\n(tfds error: {err})"
        ) from err
    if not prepared:
        raise DatasetNotFoundError(_prepare_instructions(name, data_dir)) from first_error
    file_format = str(getattr(builder.info, "file_format", "?"))
    if "array_record" not in file_format.lower():
        raise DatasetNotFoundError(
            f"TFDS dataset '{name}' in {builder.data_dir} is stored as {file_format}, which "
            "has no random access (needed to read it without TensorFlow). Convert it once with\n"
            f"    tfds convert_format --dataset_version_dir {builder.data_dir} "
            "--out_file_format array_record\n"
            "or rebuild it with `tfds build ... --file_format array_record`. With TensorFlow "
            "installed you can also use get_dataset(..., backend='tf')."
        ) from first_error
    raise first_error


def _resize_op(dataset: str, image_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The official crop/resize of ``dataset`` to ``image_size``, as a float image in [0, 1]."""
    if dataset == "CIFAR10":
        return lambda img: resize_bilinear(to_float(img), (image_size, image_size))
    if dataset == "CELEBA":
        return lambda img: resize_small(central_crop(to_float(img), 140), image_size)
    if dataset == "LSUN" and image_size == 128:
        return lambda img: central_crop(resize_small(to_float(img), image_size), image_size)
    if dataset == "LSUN":
        return lambda img: to_float(crop_resize(np.asarray(img), image_size))
    if dataset == "CelebAHQ":

        def resize_hq(img):
            img = to_float(img)
            if img.shape[:2] != (image_size, image_size):
                img = central_crop(resize_small(img, image_size), image_size)
            return img

        return resize_hq
    raise ValueError(f"{dataset!r} is not a TFDS dataset; valid: {list(TFDS_DATASETS)}.")


def preprocess_fn(dataset: str, image_size: int) -> Callable[[Mapping[str, Any]], dict]:
    """Deterministic part of the official preprocessing: crop/resize, scale to [0, 1]."""
    resize_op = _resize_op(dataset, int(image_size))

    def preprocess(example):
        img = resize_op(example["image"])
        label = np.asarray(example.get("label", 0), np.int32)
        return {"image": img.astype(np.float32), "label": label}

    return preprocess


def augment_fn(*, random_flip: bool, uniform_dequantization: bool):
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


def tf_batches(
    name: str, split: str, *, data_dir: str | None, shard: tuple[int, int], batch_size: int,
    shuffle: bool, seed: int, num_epochs: int | None,
    preprocess: Callable[[Mapping[str, Any]], dict],
    augment: Callable[[dict, np.random.Generator], dict] | None, augment_seed: int,
) -> Callable[[int], Iterator[dict]]:
    """tf.data path for TFRecord-only datasets (optional, needs TensorFlow; not tested in CI).

    Returns ``make_iter(step)``: an iterator of this host's batches of ``batch_size`` starting at
    batch ``step`` (by replaying from the start). Example ``k`` is augmented with a generator
    seeded by ``(augment_seed, k)``.
    """
    try:
        import tensorflow  # noqa: F401 -- optional extra `[tf]`, only this path needs it
    except ImportError as err:
        raise ImportError(
            "backend='tf' needs TensorFlow (`pip install tensorflow-cpu`); without it convert the "
            "dataset to ArrayRecord (`tfds convert_format ...`) and use the default backend."
        ) from err
    import tensorflow_datasets as tfds  # noqa: PLC0415 -- as in open_source
    index, count = shard

    def make_iter(step: int) -> Iterator[dict]:
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            raise DatasetNotFoundError(_prepare_instructions(name, data_dir))
        read_config = tfds.ReadConfig(shuffle_seed=seed)
        ds = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
        ds = ds.shard(count, index)
        ds = ds.repeat(num_epochs)
        if shuffle:
            ds = ds.shuffle(10000, seed=seed, reshuffle_each_iteration=True)

        def gen():
            buf = []
            for k, ex in enumerate(tfds.as_numpy(ds)):
                e = preprocess(ex)
                if augment is not None:
                    e = augment(e, np.random.default_rng([augment_seed, k]))
                buf.append(e)
                if len(buf) == batch_size:
                    yield {key: np.stack([b[key] for b in buf]) for key in ("image", "label")}
                    buf = []

        it = gen()
        for _ in range(step):
            next(it)
        return it

    return make_iter


def write_array_record(
    name: str, splits: Mapping[str, Iterable[tuple[bytes, int]]], *, data_dir: str,
    image_shape: tuple[int, int, int], num_classes: int, version: str = "1.0.0",
) -> str:
    """Write ``splits`` (``{split: [(encoded PNG/JPEG bytes, label), ...]}``) as the TFDS dataset
    ``name`` (``[a-z][a-z0-9_]*``) with features ``image`` (``image_shape``, uint8) and ``label``
    (``num_classes`` classes), in ArrayRecord format under ``data_dir``, as ``tfds build`` does;
    no TensorFlow, nothing downloaded, no class registered. :func:`open_source` (``tfds.data_source``)
    reads it back by name. Returns the dataset's version directory."""
    import tensorflow_datasets as tfds  # noqa: PLC0415 -- as in open_source

    camel = "".join(part.capitalize() for part in name.split("_"))
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or tfds.core.naming.camelcase_to_snakecase(
            camel) != name:
        raise ValueError(f"TFDS dataset name {name!r}: use lowercase words joined by '_' "
                         "(e.g. my_images).")
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=tuple(int(d) for d in image_shape)),
        "label": tfds.features.ClassLabel(num_classes=int(num_classes)),
    })

    def body(ns: dict) -> None:
        ns["VERSION"] = tfds.core.Version(version)
        ns["_info"] = lambda self: tfds.core.DatasetInfo(builder=self, features=features)
        ns["_split_generators"] = lambda self, dl_manager: {
            split: self._generate_examples(examples) for split, examples in splits.items()}
        ns["_generate_examples"] = lambda self, examples: (
            (k, {"image": image, "label": int(label)}) for k, (image, label) in
            enumerate(examples))

    cls = types.new_class(camel, (tfds.core.GeneratorBasedBuilder,),
                          {"skip_registration": True}, body)
    builder = cls(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return str(builder.data_dir)
