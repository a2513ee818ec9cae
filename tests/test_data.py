"""Input pipelines: digits, exact 2-D toy mixtures, scalers and resize ops, argument validation.

Pipeline behaviour is tested through ``data.make_dataset`` (plain arguments); the config-reading
front doors (``config_lib.get_dataset(config, ...)``, ``config_lib.get_data_scaler(config)``, re-exported from
``scoresde_jax.config``) have their own tests at the end.  The TFDS pipelines (mocked) are in
test_data_tfds.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_helpers import assert_batches_equal, image_keys, make, make_config, take
from scoresde_jax import analytic, data
from scoresde_jax import config as config_lib


def test_argument_validation_errors():
    with pytest.raises(ValueError, match="valid names.*CIFAR10.*DIGITS"):
        make("MNIST")
    with pytest.raises(ValueError, match="batch_size=6 .*not divisible by the number of hosts"):
        make("DIGITS", 8, batch_size=6, num_channels=1, shard=(0, 4))
    with pytest.raises(ValueError, match="num_channels = 1"):
        make("DIGITS", 8, num_channels=3)
    with pytest.raises(ValueError, match="image_size >= 8"):
        make("DIGITS", 4, num_channels=1)


# ------------------------------------------------------------------------ scalers, ops


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


# ------------------------------------------------------------------------------ digits


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


# -------------------------------------------------------------------------------- toys


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


# ------------------------------------------------------------------------------ shapes


def test_vector_datasets_and_example_shapes():
    assert data.is_vector_dataset("TOY_MOONS") and data.is_vector_dataset("toy_moons")
    assert not data.is_vector_dataset("CIFAR10") and not data.is_vector_dataset("DIGITS")
    assert data.example_shape("TOY_8GAUSSIANS", image_size=0, num_channels=3) == (2,)
    assert data.example_shape("CIFAR10", image_size=32, num_channels=3) == (32, 32, 3)
    assert data.example_shape("DIGITS", image_size=16, num_channels=1) == (16, 16, 1)


# --------------------------------------- config front doors (from scoresde_jax.config)


def test_get_dataset_reads_the_digits_config_and_validates_it():
    cfg = make_config("DIGITS", 12, batch_size=8, num_channels=1, digits_resize="pad")
    batches = take(config_lib.get_dataset(cfg, shard=(0, 1)), 2)
    assert_batches_equal(batches, take(make("DIGITS", 12, batch_size=8, digits_resize="pad",
                                            shard=(0, 1)), 2))
    np.testing.assert_array_equal(batches[0]["image"][:, :2], 0.0)  # zero padding
    with pytest.raises(ValueError, match="not divisible by the number of hosts"):
        config_lib.get_dataset(make_config("DIGITS", 8, batch_size=6, num_channels=1), shard=(0, 4))
    with pytest.raises(ValueError, match="num_channels = 1"):
        config_lib.get_dataset(make_config("DIGITS", 8, num_channels=3))
    with pytest.raises(ValueError, match="image_size >= 8"):
        config_lib.get_dataset(make_config("DIGITS", 4, num_channels=1))


def test_config_scalers():
    x = np.linspace(0.0, 1.0, 11)
    np.testing.assert_array_equal(config_lib.get_data_scaler(make_config())(x), x)  # official signature
    centered = make_config(centered=True)
    np.testing.assert_allclose(config_lib.get_data_scaler(centered)(x), 2 * x - 1)
    np.testing.assert_allclose(config_lib.get_data_inverse_scaler(centered)(2 * x - 1), x)
    np.testing.assert_allclose(config_lib.get_data_scaler(True)(x), 2 * x - 1)
    with pytest.raises(TypeError, match="centered"):
        config_lib.get_data_scaler("yes")
