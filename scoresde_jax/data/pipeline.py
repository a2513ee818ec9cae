"""The input pipeline: :func:`make_dataset`, a checkpointable iterator of numpy batches.

Every dataset yields numpy batches ``{'image': float32, 'label': int32 (B,)}``; images are
``(B, H, W, C)`` in [0, 1] (apply :func:`scoresde_jax.data.scaler` for [-1, 1]); toy batches are
``(B, 2)``.

Determinism and resumption. The pipeline is a Grain ``MapDataset`` whose element ``k`` *is* batch
``k`` of this host (explicit step-indexed sampler): the order is a function of ``(seed, epoch)``
only, shuffled afresh each epoch, and random flips / dequantization noise are drawn from
per-element generators keyed on ``(seed, shard, index)``. :class:`DataIterator` stores nothing but
the step: ``it.get_state() -> {'step': k, ...}`` and ``it.set_state(state)`` (or
``make_dataset(..., start_step=k)``) resume with exactly the batches an unbroken run would see.
The state is a small JSON-able dict (save it with the train state, e.g. ``ocp.args.JsonSave``).

Sharding: each host reads the contiguous block ``[i * n // c, (i + 1) * n // c)`` of the split,
truncated to the same length on every host, with ``i = jax.process_index()``,
``c = jax.process_count()`` unless ``shard=(i, c)`` is given; the global ``batch_size`` is divided
by ``c``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from scoresde_jax.data import tfds as tfds_data
from scoresde_jax.data.digits import load_digits_images
from scoresde_jax.data.folder import check_labels, index_folder
from scoresde_jax.data.folder_source import FolderSource, to_float
from scoresde_jax.data.toy import TOY_DISTRIBUTIONS, get_toy_distribution, mixture_sampler_np

__all__ = ["DATASETS", "FOLDER", "DataIterator", "make_dataset"]

FOLDER = "folder"
DATASETS = tuple(tfds_data.TFDS_DATASETS) + ("DIGITS", FOLDER) + tuple(TOY_DISTRIBUTIONS)


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


class _TfIterator(DataIterator):
    """tf.data fallback: a plain iterator; ``set_state`` replays from the start (slow resume)."""

    def __init__(self, make_iter: Callable[[int], Iterator[dict]], *, fingerprint, start_step,
                 info):
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


def _array_batches(
    images: np.ndarray, labels: np.ndarray, start: int, n: int, batch: int, *, shuffle: bool,
    num_epochs: int | None, shuffle_seed: int, augment_seed: int, random_flip: bool,
    uniform_dequantization: bool,
):
    """Step-indexed batches over in-memory arrays, same semantics as the per-example pipeline.

    Positions ``p = k * batch + j`` of the repeated stream map to epoch ``p // n`` and example
    ``perm_epoch[p % n]`` of this host's block ``[start, start + n)``; ``perm_epoch`` is a
    permutation seeded by ``(shuffle_seed, epoch)``. Augmentation draws from a generator seeded by
    ``(augment_seed, k)``.
    """

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


def _source_batches(source, shard: tuple[int, int], per_shard: int, per_host: int, *,
                    shuffle: bool, seed: int, num_epochs: int | None, preprocess, augment,
                    augment_seed: int):
    """Batches of a random-access ``source`` (TFDS or a folder): this host's block, shuffled
    per epoch, repeated, preprocessed, augmented per example, batched."""
    index, _ = shard
    ds = grain.MapDataset.source(source)[index * per_shard : (index + 1) * per_shard]
    if shuffle:
        ds = ds.shuffle(seed=_seed_int("shuffle", seed))
    ds = ds.repeat(num_epochs).map(preprocess)
    if augment is not None:
        ds = ds.random_map(augment, seed=augment_seed)
    return ds.batch(per_host, drop_remainder=True)


def _per_host_batch_size(batch_size: int, count: int) -> int:
    if batch_size <= 0:
        raise ValueError(f"Batch size must be positive, got batch_size={batch_size}.")
    if batch_size % count:
        raise ValueError(
            f"batch_size={batch_size} (the global batch) is not divisible by the number of hosts "
            f"(process count / shard count) {count}; choose a multiple of {count}."
        )
    return batch_size // count


def _examples_per_host(n: int, count: int, per_host: int, dataset: str, split: str) -> int:
    per_shard = n // count
    if per_shard < per_host:
        raise ValueError(
            f"{dataset} split {split!r} has {n} examples: {per_shard} per host for {count} "
            f"host(s), fewer than one per-host batch of {per_host}."
        )
    return per_shard


def make_dataset(
    dataset: str, *, split: str = "train", batch_size: int, image_size: int = 0,
    num_channels: int | None = None, seed: int = 0, shard: tuple[int, int] | None = None,
    data_dir: str | None = None, random_flip: bool = False, uniform_dequantization: bool = False,
    shuffle: bool | None = None, num_epochs: int | None | str = "auto", start_step: int = 0,
    num_threads: int | None = None, backend: str = "grain", category: str | None = None,
    tfds_name: str | None = None, digits_resize: str = "bilinear", path: str | None = None,
    eval_path: str | None = None, skip_bad_files: bool = False, num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
) -> DataIterator:
    """Iterator of numpy batches ``{'image', 'label'}`` of ``dataset`` (one of :data:`DATASETS`).

    Args:
      dataset: ``'CIFAR10'``, ``'CELEBA'``, ``'CelebAHQ'``, ``'LSUN'`` (TFDS, read from
        ``data_dir``), ``'DIGITS'`` (embedded scikit-learn digits), ``'folder'`` (your images
        at ``path``, :mod:`scoresde_jax.data.folder`) or a ``'TOY_*'`` mixture.
      split: ``'train'`` or ``'eval'``/``'test'`` (the dataset's evaluation split: CIFAR-10 test,
        CelebA/LSUN validation, CelebA-HQ train), or a raw TFDS split string.
      batch_size: global batch size (over all hosts); each host gets ``batch_size / count``.
      image_size: side of the square images (ignored for toy data).
      num_channels: checked against the dataset's channels when given.
      seed: order/augmentation seed.
      shard: ``(index, count)``; defaults to ``(jax.process_index(), jax.process_count())``
        (which starts the JAX backend: call ``jax.distributed.initialize()`` before, or pass it).
      data_dir: TFDS data dir (defaults to TFDS's own: ``$TFDS_DATA_DIR`` or ~/tensorflow_datasets).
      random_flip: random horizontal flips (train split only).
      uniform_dequantization: ``(255 x + U[0, 1)) / 256``.
      shuffle: shuffle each epoch (default: True for train, False for eval).
      num_epochs: ``None`` repeats forever; default ``'auto'``: forever for train, 1 for eval.
      start_step: first batch index (resumption; same as ``set_state({'step': start_step})``).
      num_threads: Grain reader threads (default 4 for TFDS, 0 for in-memory data).
      backend: ``'grain'`` (default, no TensorFlow) or ``'tf'`` (tf.data fallback for datasets
        stored as TFRecord; needs TensorFlow; not checkpointable beyond ``start_step``).
      category: LSUN category (default ``'church_outdoor'``).
      tfds_name: override of the TFDS name.
      digits_resize: DIGITS upsampling: ``'bilinear'`` (default), ``'nearest'``, ``'pad'``.
      path: folder dataset: a folder or ``.zip`` of PNG / JPEG / WebP images (the train split).
      eval_path: folder dataset: the eval / test split's folder or zip (default ``path``).
      skip_bad_files: folder dataset: leave unreadable files out (with a warning) instead of
        stopping with an error naming them.
      num_classes: folder dataset: the model's classes; the folder's labels must fit them
        (:func:`scoresde_jax.data.folder.check_labels`; None: not checked).
      class_names: folder dataset: the class folder names in label order (default: sorted).

    Images are ``(B, H, W, C)`` float32 in [0, 1] (before :func:`scoresde_jax.data.scaler`); toy
    batches are ``(B, 2)`` with the mixture component as label. Each host gets
    ``batch_size / count`` examples; the last incomplete batch is dropped.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; valid names: {list(DATASETS)}.")
    is_train = split == "train"
    if shard is None:
        shard = (jax.process_index(), jax.process_count())
    index, count = (int(s) for s in shard)
    if not 0 <= index < count:
        raise ValueError(f"shard=(index, count) needs 0 <= index < count, got {shard}.")
    per_host = _per_host_batch_size(int(batch_size), count)
    seed, image_size = int(seed), int(image_size)
    random_flip = bool(random_flip) and is_train
    uniform_dequantization = bool(uniform_dequantization)
    if shuffle is None:
        shuffle = is_train
    if num_epochs == "auto":
        num_epochs = None if is_train or dataset in TOY_DISTRIBUTIONS else 1
    fingerprint = (
        f"{dataset}|{split}|seed={seed}|shard={index}/{count}|batch={per_host}|size={image_size}"
        f"|flip={random_flip}|deq={uniform_dequantization}|shuffle={shuffle}|epochs={num_epochs}"
    )
    info = {
        "dataset": dataset, "split": split, "per_host_batch_size": per_host, "shard": (index, count)
    }
    iterator = functools.partial(DataIterator, fingerprint=fingerprint, start_step=start_step,
                                 info=info)

    if dataset in TOY_DISTRIBUTIONS:
        if num_epochs is not None:  # an "epoch" has no meaning for an infinite generator
            raise ValueError(f"{dataset} is an infinite generator; use num_epochs=None.")
        gmm = get_toy_distribution(dataset)
        sample = mixture_sampler_np(gmm)  # host arrays and Cholesky factors, computed once
        base = _seed_int("toy", seed, split, index, count)

        def toy_batch(k):
            x, comp = sample(np.random.default_rng([base, int(k)]), per_host)
            return {"image": x, "label": comp}

        info["distribution"] = gmm
        return iterator(grain.MapDataset.range(0, 2**62).map(toy_batch),
                        num_threads=num_threads or 0)

    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    augment_seed = _seed_int("augment", seed, index, count)
    augment = None
    if random_flip or uniform_dequantization:
        augment = tfds_data.augment_fn(random_flip=random_flip,
                                       uniform_dequantization=uniform_dequantization)
    if dataset == FOLDER:
        if split not in ("train", "eval", "test", "validation"):
            raise ValueError(f"a folder dataset has the splits 'train' (data.path) and 'eval' "
                             f"(data.eval_path, default data.path); got split={split!r}.")
        folder = index_folder(path if is_train else (eval_path or path),
                              skip_bad_files=bool(skip_bad_files),
                              class_names=None if class_names is None else tuple(class_names))
        if num_classes is not None:
            check_labels(folder, int(num_classes))
        source = FolderSource(folder, image_size=image_size,
                              num_channels=3 if num_channels is None else int(num_channels))
        per_shard = _examples_per_host(len(source), count, per_host, dataset, split)
        info.update(examples_per_host=per_shard, path=folder.path, num_images=len(folder),
                    label_source=folder.label_source, class_names=folder.class_names,
                    bad_files=[rel for rel, _ in folder.bad])
        ds = _source_batches(source, (index, count), per_shard, per_host, shuffle=shuffle,
                             seed=seed, num_epochs=num_epochs, preprocess=to_float,
                             augment=augment, augment_seed=augment_seed)
        return DataIterator(ds, fingerprint=f"{fingerprint}|images={len(folder)}",
                            start_step=start_step, info=info,
                            num_threads=4 if num_threads is None else num_threads)

    native = 1 if dataset == "DIGITS" else tfds_data.TFDS_DATASETS[dataset].num_channels
    if num_channels is not None and int(num_channels) != native:
        raise ValueError(
            f"num_channels={num_channels} but {dataset} has {native} channel(s); "
            f"set num_channels = {native} (config.data.num_channels)."
        )

    if dataset == "DIGITS":
        images, labels = load_digits_images(split, image_size=image_size,
                                            method=str(digits_resize))
        per_shard = _examples_per_host(len(images), count, per_host, dataset, split)
        info["examples_per_host"] = per_shard
        ds = _array_batches(  # in memory: whole batches by vectorized indexing
            images, labels, index * per_shard, per_shard, per_host, shuffle=shuffle,
            num_epochs=num_epochs, shuffle_seed=_seed_int("shuffle", seed),
            augment_seed=augment_seed, random_flip=random_flip,
            uniform_dequantization=uniform_dequantization,
        )
        return iterator(ds, num_threads=0 if num_threads is None else num_threads)

    name = tfds_data.tfds_name(dataset, image_size=image_size, category=category,
                               override=tfds_name)
    tfds_split = tfds_data.resolve_split(dataset, split)
    preprocess = tfds_data.preprocess_fn(dataset, image_size)
    if backend == "tf":
        make_iter = tfds_data.tf_batches(
            name, tfds_split, data_dir=data_dir, shard=(index, count), batch_size=per_host,
            shuffle=shuffle, seed=seed, num_epochs=num_epochs, preprocess=preprocess,
            augment=augment, augment_seed=augment_seed,
        )
        return _TfIterator(make_iter, fingerprint=fingerprint, start_step=start_step, info=info)
    if backend != "grain":
        raise ValueError(f"backend must be 'grain' or 'tf', got {backend!r}.")
    source = tfds_data.open_source(name, tfds_split, data_dir)
    info["tfds_name"], info["tfds_split"] = name, tfds_split
    per_shard = _examples_per_host(len(source), count, per_host, dataset, split)
    info["examples_per_host"] = per_shard
    ds = _source_batches(source, (index, count), per_shard, per_host, shuffle=shuffle, seed=seed,
                         num_epochs=num_epochs, preprocess=preprocess, augment=augment,
                         augment_seed=augment_seed)
    return iterator(ds, num_threads=4 if num_threads is None else num_threads)
