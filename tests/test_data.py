"""Input pipelines: TFDS (mocked, no TensorFlow) through Grain, digits, exact 2-D toy mixtures.

Pipeline behaviour is tested through ``data.make_dataset`` (plain arguments); the config-reading
front doors (``data.get_dataset(config, ...)``, ``data.get_data_scaler(config)``, re-exported from
``scoresde_jax.config``) have their own tests at the end.
"""

from __future__ import annotations

import tempfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from scoresde_jax import analytic, data

N_MOCK = 12


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


def take(it, n):
    return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])


def image_keys(batches):
    return [hash(im.tobytes()) for b in batches for im in b["image"]]


# ----------------------------------------------------------------------------- TFDS


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


def test_argument_validation_errors():
    with pytest.raises(ValueError, match="valid names.*CIFAR10.*DIGITS"):
        make("MNIST")
    with pytest.raises(ValueError, match="batch_size=6 .*not divisible by the number of hosts"):
        make("DIGITS", 8, batch_size=6, num_channels=1, shard=(0, 4))
    with pytest.raises(ValueError, match="num_channels = 1"):
        make("DIGITS", 8, num_channels=3)
    with pytest.raises(ValueError, match="image_size >= 8"):
        make("DIGITS", 4, num_channels=1)


# --------------------------------------------------------------------------- scalers, ops


def test_scalers_round_trip():
    x = np.linspace(0.0, 1.0, 11)
    scaler, inverse = data.scaler(True), data.inverse_scaler(True)
    np.testing.assert_allclose(scaler(x), 2 * x - 1)
    np.testing.assert_allclose(inverse(scaler(x)), x)
    np.testing.assert_array_equal(data.scaler(False)(x), x)
    np.testing.assert_array_equal(data.inverse_scaler(False)(x), x)
    with pytest.raises(TypeError, match="centered"):
        data.scaler("yes")


def test_resize_ops_match_jax_antialiased_resize():
    rng = np.random.default_rng(0)
    img = rng.random((40, 30, 3)).astype(np.float32)
    ours = data.resize_bilinear(img, (16, 12))
    ref = np.asarray(jax.image.resize(jnp.asarray(img), (16, 12, 3), "linear", antialias=True))
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    small = data.resize_small(img, 20)
    assert small.shape == (27, 20, 3)
    crop = data.central_crop(small, 20)
    np.testing.assert_array_equal(crop, small[3:23])
    u8 = (img * 255).astype(np.uint8)
    cr = data.crop_resize(u8, 8)
    assert cr.shape == (8, 8, 3) and cr.dtype == np.uint8


# ----------------------------------------------------------------------------- digits


def test_digits_split_and_values():
    x_tr, y_tr = data.load_digits_images("train")
    x_te, y_te = data.load_digits_images("test")
    assert x_tr.shape == (1437, 8, 8, 1) and x_te.shape == (360, 8, 8, 1)
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_te), np.bincount(y_te).clip(35, 37))  # stratified
    x16, _ = data.load_digits_images("train", image_size=16)
    assert x16.shape == (1437, 16, 16, 1) and 0.0 <= x16.min() and x16.max() <= 1.0
    # Bilinear upsampling (half-pixel centers, as jax.image.resize / tf.image.resize).
    ref = jax.image.resize(jnp.asarray(x_tr[:5]), (5, 16, 16, 1), "linear")
    np.testing.assert_allclose(x16[:5], np.asarray(ref), atol=1e-5)
    back = x16.reshape(-1, 8, 2, 8, 2, 1).mean(axis=(2, 4))  # 2x2 block means: a slight blur
    assert np.abs(back - x_tr).mean() < 0.1
    xp, _ = data.load_digits_images("test", image_size=12, method="pad")
    np.testing.assert_array_equal(xp[:, 2:10, 2:10], x_te)


def test_digits_pipeline_deterministic_resumable_sharded():
    kw = dict(dataset="DIGITS", image_size=16, batch_size=8, num_channels=1, seed=0)
    a = take(make(shard=(0, 1), **kw), 4)
    assert a[0]["image"].shape == (8, 16, 16, 1) and a[0]["label"].shape == (8,)
    assert_batches_equal(a, take(make(shard=(0, 1), **kw), 4))
    assert_batches_equal(a[2:], take(make(shard=(0, 1), start_step=2, **kw), 2))
    h0 = make(shard=(0, 2), num_epochs=1, **kw)
    h1 = make(shard=(1, 2), num_epochs=1, **kw)
    l0 = np.concatenate([b["label"] for b in h0])
    l1 = np.concatenate([b["label"] for b in h1])
    assert len(l0) == len(l1) == (1437 // 2) // 4 * 4
    ev = list(make(split="eval", shard=(0, 1), **kw))
    assert len(ev) == 360 // 8


def test_digits_epochs_are_permutations_and_flips_mirror():
    # 1437 = 3 * 479
    kw = dict(dataset="DIGITS", image_size=8, batch_size=479, num_channels=1, seed=0, shard=(0, 1))
    it = make(**kw)
    e0, e1 = take(it, 3), take(it, 3)
    x_tr, _ = data.load_digits_images("train")
    every = sorted(hash(im.tobytes()) for im in x_tr)
    assert sorted(image_keys(e0)) == every and sorted(image_keys(e1)) == every
    assert image_keys(e0) != image_keys(e1)
    f0 = take(make(random_flip=True, **kw), 1)[0]["image"]
    same = np.all(f0 == e0[0]["image"], axis=(1, 2, 3))
    mirrored = np.all(f0 == e0[0]["image"][:, :, ::-1], axis=(1, 2, 3))
    assert np.all(same | mirrored) and 0.3 < np.mean(~same) < 0.7


# ------------------------------------------------------------------------------- toys


@pytest.mark.parametrize("name", sorted(data.TOY_DISTRIBUTIONS))
def test_toy_samples_match_exact_moments(name):
    mix = data.get_toy_distribution(name)
    x, comp = data.sample_mixture_np(mix, 0, 40000)
    assert x.shape == (40000, 2) and x.dtype == np.float32
    scale = np.sqrt(np.trace(np.asarray(mix.cov)))
    np.testing.assert_allclose(x.mean(0), np.asarray(mix.mean), atol=0.03 * scale)
    np.testing.assert_allclose(np.cov(x, rowvar=False), np.asarray(mix.cov), atol=0.03 * scale**2)
    # Samples sit next to their component's mean.
    std = np.sqrt(np.max(np.asarray(mix.covs)[:, [0, 1], [0, 1]]))
    assert np.max(np.abs(x - np.asarray(mix.means)[comp])) < 6 * std


def test_toy_pipeline_batches_and_exact_score():
    kw = dict(dataset="TOY_8GAUSSIANS", image_size=0, batch_size=16, seed=0)
    it = make(shard=(0, 1), **kw)
    a = take(it, 3)
    assert a[0]["image"].shape == (16, 2) and a[0]["label"].dtype == np.int32
    assert_batches_equal(a[1:], take(make(shard=(0, 1), start_step=1, **kw), 2))
    other_host = take(make(shard=(1, 2), **kw), 1)[0]["image"]
    assert other_host.shape == (8, 2) and not np.array_equal(other_host, a[0]["image"][:8])
    ev = next(make(split="eval", shard=(0, 1), **kw))  # its own stream
    assert ev["image"].shape == (16, 2) and not np.array_equal(ev["image"], a[0]["image"])
    mix = it.info["distribution"]
    # Exact parameters: 8 isotropic components, std 0.1, on the ring of radius 2.
    ring = 2.0 * np.stack([np.cos(np.pi * np.arange(8) / 4), np.sin(np.pi * np.arange(8) / 4)], -1)
    np.testing.assert_allclose(np.asarray(mix.means), ring, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mix.covs), np.broadcast_to(0.01 * np.eye(2), (8, 2, 2)))
    # Its score (grad of analytic.mixture_logp) is the isotropic closed form
    # sum_k r_k(x) (mu_k - x) / std^2 with responsibilities r_k proportional to N(x; mu_k, std^2).
    x = a[0]["image"].astype(np.float64) * 0.9  # also points between the modes
    logp = lambda y: jnp.sum(analytic.mixture_logp(mix, y))  # noqa: E731
    got = np.asarray(jax.grad(logp)(jnp.asarray(x, jnp.float32)))
    d2 = np.sum((x[:, None] - ring[None]) ** 2, -1) / (2 * 0.01)
    r = np.exp(-(d2 - d2.min(1, keepdims=True)))
    r /= r.sum(1, keepdims=True)
    want = np.einsum("bk,bkd->bd", r, ring[None] - x[:, None]) / 0.01
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-2)


def test_tf_backend_needs_tensorflow(local_tmp):
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tensorflow-cpu"):
            make(backend="tf", data_dir=str(local_tmp), shard=(0, 1))
    else:  # pragma: no cover - TensorFlow is optional
        pytest.skip("TensorFlow is installed; the fallback needs a prepared dataset.")


# ------------------------------------------------------------------- names and shapes


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


def test_vector_datasets_and_example_shapes():
    assert data.is_vector_dataset("TOY_MOONS") and data.is_vector_dataset("toy_moons")
    assert not data.is_vector_dataset("CIFAR10") and not data.is_vector_dataset("DIGITS")
    assert data.example_shape("TOY_8GAUSSIANS", image_size=0, num_channels=3) == (2,)
    assert data.example_shape("CIFAR10", image_size=32, num_channels=3) == (32, 32, 3)
    assert data.example_shape("DIGITS", image_size=16, num_channels=1) == (16, 16, 1)


# ------------------------------------------- config front doors (from scoresde_jax.config)


def test_get_dataset_reads_the_config(mock_tfds):
    """``get_dataset(config)`` is ``make_dataset`` with ``config.data``, the train/eval batch sizes
    and ``config.seed``; its keyword arguments override them."""
    cfg = make_config(random_flip=True, uniform_dequantization=True)
    cfg.seed, cfg.eval.batch_size = 3, 6
    kw = dict(data_dir=mock_tfds, shard=(0, 1))
    got = data.get_dataset(cfg, **kw)
    want = make(seed=3, random_flip=True, uniform_dequantization=True, num_channels=3, **kw)
    assert got.fingerprint == want.fingerprint
    assert_batches_equal(take(got, 4), take(want, 4))
    ev = data.get_dataset(cfg, split="eval", **kw)  # eval batch size; flips on train only
    assert ev.fingerprint == make(split="eval", batch_size=6, seed=3, uniform_dequantization=True,
                                  **kw).fingerprint
    assert len(list(ev)) == N_MOCK // 6
    over = data.get_dataset(cfg, seed=4, batch_size=2, uniform_dequantization=False, **kw)
    assert over.fingerprint == make(batch_size=2, seed=4, random_flip=True, **kw).fingerprint
    lsun = data.get_dataset(make_config("LSUN", 32, category="church_outdoor"), **kw)
    assert lsun.info["tfds_name"] == "lsun/church_outdoor"
    assert next(lsun)["image"].shape == (4, 32, 32, 3)


def test_get_dataset_reads_the_digits_config_and_validates_it():
    cfg = make_config("DIGITS", 12, batch_size=8, num_channels=1, digits_resize="pad")
    batches = take(data.get_dataset(cfg, shard=(0, 1)), 2)
    assert_batches_equal(batches, take(make("DIGITS", 12, batch_size=8, digits_resize="pad",
                                            shard=(0, 1)), 2))
    np.testing.assert_array_equal(batches[0]["image"][:, :2], 0.0)  # zero padding
    with pytest.raises(ValueError, match="not divisible by the number of hosts"):
        data.get_dataset(make_config("DIGITS", 8, batch_size=6, num_channels=1), shard=(0, 4))
    with pytest.raises(ValueError, match="num_channels = 1"):
        data.get_dataset(make_config("DIGITS", 8, num_channels=3))
    with pytest.raises(ValueError, match="image_size >= 8"):
        data.get_dataset(make_config("DIGITS", 4, num_channels=1))


def test_config_scalers():
    x = np.linspace(0.0, 1.0, 11)
    np.testing.assert_array_equal(data.get_data_scaler(make_config())(x), x)  # official signature
    centered = make_config(centered=True)
    np.testing.assert_allclose(data.get_data_scaler(centered)(x), 2 * x - 1)
    np.testing.assert_allclose(data.get_data_inverse_scaler(centered)(2 * x - 1), x)
    np.testing.assert_allclose(data.get_data_scaler(True)(x), 2 * x - 1)
    with pytest.raises(TypeError, match="centered"):
        data.get_data_scaler("yes")
