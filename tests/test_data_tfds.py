"""Input pipelines, TFDS (mocked, no TensorFlow) through Grain: CIFAR-10, CelebA and LSUN shapes,
determinism, epochs, resumption, host shards, augmentation, the eval split, missing datasets, TFDS
names, and the config front door ``config_lib.get_dataset(config, ...)`` on a TFDS dataset.  Digits, toy
mixtures, scalers and resize ops are in test_data.py.
"""

from __future__ import annotations

import tempfile

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_helpers import assert_batches_equal, image_keys, make, make_config, take
from scoresde_jax import config as config_lib
from scoresde_jax import data

N_MOCK = 12


@pytest.fixture
def local_tmp(tmp_path, monkeypatch):
    """Keep TFDS's temporary files (it makes some even for a missing dataset) inside tmp_path."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp_path


@pytest.fixture
def mock_tfds(local_tmp):
    """tfds.testing.mock_data with every temporary file inside tmp_path; yields the data_dir."""
    with tfds.testing.mock_data(num_examples=N_MOCK):
        yield str(local_tmp / "tfds")


# -------------------------------------------------------------------------------- TFDS


def test_cifar10_shapes_ranges_and_raw_values(mock_tfds):
    it = make(data_dir=mock_tfds, shard=(0, 1))
    b = next(it)
    assert b["image"].shape == (4, 32, 32, 3) and b["image"].dtype == np.float32
    assert b["label"].shape == (4,) and b["label"].dtype == np.int32
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
    # Without augmentation the images are exactly the uint8 source / 255.
    src = tfds.data_source("cifar10", split="train", data_dir=mock_tfds)
    raw = {hash((src[i]["image"].astype(np.float32) / 255.0).tobytes()) for i in range(len(src))}
    assert set(image_keys([b])) <= raw


@pytest.mark.parametrize(
    "dataset,size,extra",
    [("CELEBA", 64, {}), ("LSUN", 128, {"category": "church_outdoor"}),
     ("LSUN", 32, {"category": "church_outdoor"})],
)
def test_celeba_lsun_shapes_and_ranges(mock_tfds, dataset, size, extra):
    for split in ("train", "eval"):
        b = next(make(dataset, size, random_flip=True, split=split, data_dir=mock_tfds,
                      shard=(0, 1), **extra))
        assert b["image"].shape == (4, size, size, 3) and b["image"].dtype == np.float32
        assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0 + 1e-6
        np.testing.assert_array_equal(b["label"], 0)  # no labels in these datasets


def test_determinism_and_seed_dependence(mock_tfds):
    kw = dict(random_flip=True, uniform_dequantization=True, data_dir=mock_tfds, shard=(0, 1))
    a = take(make(seed=3, **kw), 5)
    b = take(make(seed=3, **kw), 5)
    assert_batches_equal(a, b)
    c = take(make(seed=4, **kw), 5)
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c))


def test_epochs_are_reshuffled_permutations(mock_tfds):
    it = make(seed=0, data_dir=mock_tfds, shard=(0, 1))
    per_epoch = N_MOCK // 4
    e0, e1 = take(it, per_epoch), take(it, per_epoch)
    assert sorted(image_keys(e0)) == sorted(image_keys(e1))  # each epoch: every example once
    assert len(set(image_keys(e0))) == N_MOCK
    assert image_keys(e0) != image_keys(e1)  # in a new order


def test_resumption_gives_the_same_batches(mock_tfds):
    kw = dict(random_flip=True, uniform_dequantization=True, data_dir=mock_tfds, shard=(0, 1))
    unbroken = take(make(seed=1, **kw), 7)
    it = make(seed=1, **kw)
    take(it, 2)
    state = it.get_state()
    assert state["step"] == 2
    take(it, 3)  # advance past the checkpoint, then restore
    it.set_state(state)
    assert_batches_equal(take(it, 5), unbroken[2:])  # crosses the epoch boundary at step 3
    fresh = make(seed=1, **kw)
    fresh.set_state(state)  # as after a restart of the process
    assert_batches_equal(take(fresh, 5), unbroken[2:])
    direct = make(seed=1, start_step=4, **kw)
    assert_batches_equal(take(direct, 3), unbroken[4:])
    other = make(seed=2, **kw)
    with pytest.raises(ValueError, match="same dataset, split, seed"):
        other.set_state(state)


def test_per_host_shards_are_disjoint_and_cover(mock_tfds):
    shards = [  # global batch 4 -> 2 per host
        take(make(batch_size=4, seed=0, data_dir=mock_tfds, shard=(i, 2), num_epochs=1), 3)
        for i in range(2)
    ]
    for s in shards:
        assert s[0]["image"].shape[0] == 2
    k0, k1 = set(image_keys(shards[0])), set(image_keys(shards[1]))
    assert len(k0) == len(k1) == N_MOCK // 2
    assert not k0 & k1 and len(k0 | k1) == N_MOCK
    with pytest.raises(StopIteration):  # one epoch of 6 examples = 3 batches of 2
        next(make(batch_size=4, seed=0, data_dir=mock_tfds, shard=(0, 2), num_epochs=1,
                  start_step=3))


def test_default_shard_is_the_jax_process(mock_tfds):
    it = make(data_dir=mock_tfds)
    assert it.info["shard"] == (jax.process_index(), jax.process_count())


def test_random_flip_and_uniform_dequantization(mock_tfds):
    kw = dict(seed=5, data_dir=mock_tfds, shard=(0, 1))
    plain = take(make(**kw), 3)
    flip = take(make(random_flip=True, **kw), 3)
    flipped = 0
    for p, f in zip(plain, flip):  # same order (the shuffle does not depend on augmentation)
        for x, y in zip(p["image"], f["image"]):
            same, mirrored = np.array_equal(x, y), np.array_equal(x[:, ::-1], y)
            assert same or mirrored
            flipped += mirrored and not same
    assert 0 < flipped < 12
    deq = take(make(uniform_dequantization=True, **kw), 3)
    for p, d in zip(plain, deq):
        u = d["image"] * 256.0 - p["image"] * 255.0  # (255 x + U) / 256 -> U in [0, 1)
        assert u.min() >= -1e-3 and u.max() < 1.0 + 1e-3
        assert 0.4 < u.mean() < 0.6


def test_eval_split_is_ordered_single_epoch(mock_tfds):
    it = make(split="eval", data_dir=mock_tfds, shard=(0, 1))
    batches = list(it)
    assert len(batches) == N_MOCK // 4
    src = tfds.data_source("cifar10", split="test", data_dir=mock_tfds)
    np.testing.assert_array_equal(batches[0]["label"], [src[i]["label"] for i in range(4)])


def test_missing_dataset_error_says_how_to_prepare(local_tmp):
    empty = local_tmp / "empty"
    with pytest.raises(data.DatasetNotFoundError, match="tfds build cifar10 --data_dir"):
        make(data_dir=str(empty), shard=(0, 1))
    with pytest.raises(data.DatasetNotFoundError, match="manual"):
        make("CelebAHQ", 256, data_dir=str(empty), shard=(0, 1))
    assert not empty.exists() or not any(empty.rglob("*.array_record*"))  # nothing downloaded


def test_tf_backend_needs_tensorflow(local_tmp):
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorflow-cpu"):
            make(backend="tf", data_dir=str(local_tmp), shard=(0, 1))
    else:  # pragma: no cover - TensorFlow is optional
        pytest.skip("TensorFlow is installed; the fallback needs a prepared dataset.")


# -------------------------------------------------------------------- names and splits


def test_tfds_names_and_splits():
    from scoresde_jax.data.tfds import resolve_split, tfds_name

    assert tfds_name("CIFAR10", image_size=32) == "cifar10"
    assert tfds_name("CELEBA", image_size=64) == "celeb_a"
    assert tfds_name("LSUN", image_size=256) == "lsun/church_outdoor"
    assert tfds_name("LSUN", image_size=256, category="bedroom") == "lsun/bedroom"
    assert tfds_name("CelebAHQ", image_size=256) == "celeb_a_hq/256"
    assert tfds_name("CelebAHQ", image_size=100) == "celeb_a_hq/1024"  # no TFDS config of 100
    assert tfds_name("CIFAR10", image_size=32, override="my_cifar") == "my_cifar"
    assert resolve_split("CIFAR10", "eval") == "test"
    assert resolve_split("LSUN", "test") == "validation"
    assert resolve_split("CelebAHQ", "eval") == "train"
    assert resolve_split("CIFAR10", "train[:90%]") == "train[:90%]"


# ---------------------------------------- config front door (from scoresde_jax.config)


def test_get_dataset_reads_the_config(mock_tfds):
    """``get_dataset(config)`` is ``make_dataset`` with ``config.data``, the train/eval batch sizes
    and ``config.seed``; its keyword arguments override them."""
    cfg = make_config(random_flip=True, uniform_dequantization=True)
    cfg.seed, cfg.eval.batch_size = 3, 6
    kw = dict(data_dir=mock_tfds, shard=(0, 1))
    got = config_lib.get_dataset(cfg, **kw)
    want = make(seed=3, random_flip=True, uniform_dequantization=True, num_channels=3, **kw)
    assert got.fingerprint == want.fingerprint
    assert_batches_equal(take(got, 4), take(want, 4))
    ev = config_lib.get_dataset(cfg, split="eval", **kw)  # eval batch size; flips on train only
    assert ev.fingerprint == make(split="eval", batch_size=6, seed=3, uniform_dequantization=True,
                                  **kw).fingerprint
    assert len(list(ev)) == N_MOCK // 6
    over = config_lib.get_dataset(cfg, seed=4, batch_size=2, uniform_dequantization=False, **kw)
    assert over.fingerprint == make(batch_size=2, seed=4, random_flip=True, **kw).fingerprint
    lsun = config_lib.get_dataset(make_config("LSUN", 32, category="church_outdoor"), **kw)
    assert lsun.info["tfds_name"] == "lsun/church_outdoor"
    assert next(lsun)["image"].shape == (4, 32, 32, 3)
