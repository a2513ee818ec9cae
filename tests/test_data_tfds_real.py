"""The TFDS path on real ArrayRecord files (no mock): a small dataset written by a local
``tfds.core.GeneratorBasedBuilder`` (:func:`scoresde_jax.data.tfds.write_array_record`, nothing
downloaded, no TensorFlow) into a tmp data dir, read by ``tfds.data_source`` + Grain as CIFAR-10
is, for the train and eval splits: exact pixels and labels, every example once per epoch,
resumption, host blocks; the same images as a folder give the same examples.
"""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import pytest
from PIL import Image

from data_helpers import assert_batches_equal, take
from scoresde_jax import data
from scoresde_jax.data import tfds as tfds_data

NAME = "scoresde_real_images"
N_TRAIN, N_TEST = 12, 8


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_tfds(tmp_path_factory):
    """``(data_dir, {split: (images, labels)})``: 32x32 RGB images, image ``i`` of the train
    split constant ``i`` in its first pixel row (so each is identifiable), labels ``i % 3``."""
    root = tmp_path_factory.mktemp("tfds_real")
    rng = np.random.default_rng(0)
    splits = {}
    for split, n, offset in (("train", N_TRAIN, 0), ("test", N_TEST, 100)):
        images = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
        images[:, 0] = (np.arange(n) + offset)[:, None, None]
        splits[split] = (images, (np.arange(n) % 3).astype(np.int32))
    old = tempfile.tempdir
    tempfile.tempdir = str(root)  # TFDS's temporary files inside the tmp dir
    try:
        out = tfds_data.write_array_record(
            NAME, {s: [(_png(x), int(y)) for x, y in zip(*v)] for s, v in splits.items()},
            data_dir=str(root / "data"), image_shape=(32, 32, 3), num_classes=3)
    finally:
        tempfile.tempdir = old
    assert any(f.endswith(tuple(f"array_record-00000-of-{k:05d}" for k in range(1, 9)))
               for f in os.listdir(out))
    return str(root / "data"), splits


def make(data_dir, split="train", batch_size=4, **kw):
    kw.setdefault("shard", (0, 1))
    return data.make_dataset("CIFAR10", tfds_name=NAME, data_dir=data_dir, split=split,
                             image_size=32, batch_size=batch_size, **kw)


def _ids(batches, offset=0):
    return [int(round(v * 255)) - offset for b in batches for v in b["image"][:, 0, 0, 0]]


@pytest.mark.parametrize("split,n,offset", [("train", N_TRAIN, 0), ("eval", N_TEST, 100)])
def test_real_array_record_splits_exact(real_tfds, split, n, offset):
    data_dir, splits = real_tfds
    it = make(data_dir, split=split, batch_size=4, shuffle=False, num_epochs=1)
    assert it.info["tfds_split"] == ("train" if split == "train" else "test")
    batches = list(it)
    assert len(batches) == n // 4
    images, labels = splits["train" if split == "train" else "test"]
    ids = _ids(batches, offset)
    assert sorted(ids) == list(range(n))  # every example once, decoded from the PNG bytes
    got = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(got, images[ids].astype(np.float32) / 255.0)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches]), labels[ids])


def test_real_array_record_shuffle_epochs_resume_and_hosts(real_tfds):
    data_dir, _ = real_tfds
    a = take(make(data_dir, seed=7, random_flip=True, uniform_dequantization=True), 9)
    assert_batches_equal(a, take(make(data_dir, seed=7, random_flip=True,
                                      uniform_dequantization=True), 9))
    plain = take(make(data_dir, seed=7), 6)
    for epoch in (plain[:3], plain[3:]):
        assert sorted(_ids(epoch)) == list(range(N_TRAIN))
    assert _ids(plain[:3]) != _ids(plain[3:])  # reshuffled each epoch
    it = make(data_dir, seed=7, random_flip=True, uniform_dequantization=True)
    take(it, 5)
    resumed = make(data_dir, seed=7, random_flip=True, uniform_dequantization=True,
                   start_step=it.get_state()["step"])
    assert_batches_equal(take(resumed, 4), a[5:])
    blocks = [_ids(list(make(data_dir, shard=(i, 2), shuffle=False, num_epochs=1)))
              for i in range(2)]
    assert len(blocks[0]) == len(blocks[1]) == 6  # contiguous blocks of the stored order
    assert sorted(blocks[0] + blocks[1]) == list(range(N_TRAIN))


def test_the_same_images_as_a_folder_give_the_same_examples(real_tfds, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data_dir, splits = real_tfds
    images, labels = splits["train"]
    for i, (x, y) in enumerate(zip(images, labels)):
        os.makedirs(tmp_path / f"class{y}", exist_ok=True)
        Image.fromarray(x).save(tmp_path / f"class{y}" / f"{i:02d}.png")
    folder = list(data.make_dataset("folder", path=str(tmp_path), image_size=32, batch_size=4,
                                    shard=(0, 1), shuffle=False, num_epochs=1, num_classes=3))
    tfds_batches = list(make(data_dir, shuffle=False, num_epochs=1))

    def examples(batches):
        return sorted((int(round(x[0, 0, 0] * 255)), x.tobytes(), int(y))
                      for b in batches for x, y in zip(b["image"], b["label"]))

    assert examples(folder) == examples(tfds_batches)
