"""FID / IS / KID against closed forms, streaming statistics, and the offline digits metric."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from scipy.ndimage import gaussian_filter

from scoresde_jax import evaluation as ev
from scoresde_jax.data import load_digits_images


def _random_spd(rng, d, rank=None):
    a = rng.normal(size=(d, rank or d))
    return a @ a.T / d + (0 if rank else 0.1 * np.eye(d))


# ---------------------------------------------------------------------------------- FID


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(0)
    d = 7
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    # Commuting covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = sum (sqrt v1 - sqrt v2)^2.
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    got = ev.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # Rotating both covariances by the same orthogonal matrix leaves it unchanged.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got_rot = ev.frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    np.testing.assert_allclose(got_rot, want, rtol=1e-9)


def test_frechet_distance_1d_and_identity():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2, the squared 2-Wasserstein distance.
    np.testing.assert_allclose(ev.frechet_distance([1.0], [[4.0]], [-0.5], [[9.0]]), 1.5**2 + 1.0)
    rng = np.random.default_rng(1)
    s = _random_spd(rng, 5)
    assert ev.frechet_distance(np.zeros(5), s, np.zeros(5), s) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_full_covariances():
    rng = np.random.default_rng(2)
    d = 12
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    np.testing.assert_allclose(ev.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-9)


def test_frechet_distance_singular_covariances_stay_real_and_exact():
    rng = np.random.default_rng(3)
    d = 10
    # Rank-3 covariances (as with more features than samples, or dead ReLU units).
    s1, s2 = _random_spd(rng, d, rank=3), _random_spd(rng, d, rank=3)
    got = ev.frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    assert np.isfinite(got) and got >= 0
    # Exact value from the nonzero eigenvalues of sqrt(S1) S2 sqrt(S1).
    w, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)
    want = np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(lam))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # Same singular covariance: exactly 0 (sqrtm-based code returns complex/NaN-prone values here).
    assert ev.frechet_distance(np.zeros(d), s1, np.zeros(d), s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_shape_errors():
    with pytest.raises(ValueError, match="do not match"):
        ev.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_fid_from_gaussian_samples_approaches_closed_form():
    rng = np.random.default_rng(4)
    d, n = 4, 40000
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    v1, v2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 1.0, 0.5, 3.0])
    x1 = mu1 + rng.normal(size=(n, d)) * np.sqrt(v1)
    x2 = mu2 + rng.normal(size=(n, d)) * np.sqrt(v2)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert ev.fid_from_features(x1, x2) == pytest.approx(want, rel=0.03)


# ---------------------------------------------------------------------------- streaming


def test_feature_stats_streaming_equals_batch_and_merge():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1000, 6)) @ rng.normal(size=(6, 6)) + 1e6  # large offset: no cancellation
    st = ev.FeatureStats(keep=300)
    for chunk in np.array_split(x, [1, 17, 400, 401, 999]):
        st.update(chunk)
    assert st.count == 1000
    np.testing.assert_allclose(st.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(st.features, x[:300])
    a = ev.FeatureStats.from_features(x[:123])
    b = ev.FeatureStats.from_features(x[123:])
    a.merge(b)
    np.testing.assert_allclose(a.cov, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="dimension"):
        st.update(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="non-finite"):
        st.update(np.full((2, 6), np.nan))


# ----------------------------------------------------------------------------------- IS


def test_inception_score_closed_forms():
    k = 10
    # Identical predictions: p(y|x) = p(y), KL = 0, IS = 1.
    assert ev.inception_score(np.zeros((50, k))) == pytest.approx(1.0)
    # Confident and balanced: IS -> K.
    logits = 50.0 * np.eye(k)[np.arange(200) % k]
    assert ev.inception_score(logits) == pytest.approx(k, rel=1e-6)
    # Two classes, rows p and 1-p: p(y) = (1/2, 1/2), KL = log 2 - H(p).
    p = 0.8
    rows = np.log(np.array([[p, 1 - p], [1 - p, p]] * 10))
    h = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    assert ev.inception_score(rows) == pytest.approx(np.exp(np.log(2) - h), rel=1e-10)


def test_logit_stats_streaming_equals_batch():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(333, 10)) * 3
    st = ev.LogitStats()
    for chunk in np.array_split(logits, 7):
        st.update(chunk)
    assert st.inception_score() == pytest.approx(ev.inception_score(logits), rel=1e-12)
    halves = ev.LogitStats().update(logits[:100]).merge(ev.LogitStats().update(logits[100:]))
    assert halves.inception_score() == pytest.approx(ev.inception_score(logits), rel=1e-12)
    two = ev.inception_score(logits, num_splits=2)
    want = np.mean([ev.inception_score(logits[:167]), ev.inception_score(logits[167:])])
    assert two == pytest.approx(want)


# ---------------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_brute_force():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(9, 3)), rng.normal(size=(7, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1.0) ** 3  # noqa: E731
    sxx = sum(k(x[i], x[j]) for i in range(9) for j in range(9) if i != j) / (9 * 8)
    syy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    sxy = sum(k(x[i], y[j]) for i in range(9) for j in range(7)) / (9 * 7)
    np.testing.assert_allclose(ev.polynomial_mmd2_unbiased(x, y), sxx + syy - 2 * sxy, rtol=1e-12)


def test_mmd2_1d_equals_power_sum_formula():
    # In 1-D with gamma = 1: k(x, y) = (xy + 1)^3 = sum_p c_p x^p y^p, c = (1, 3, 3, 1), so
    # sum_{i != j} k(x_i, x_j) = sum_p c_p (S_p^2 - S_2p) with power sums S_p = sum_i x_i^p.
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=50), rng.normal(0.4, 1.2, size=60)
    c = [1.0, 3.0, 3.0, 1.0]
    S = lambda a, p: np.sum(a**p)  # noqa: E731
    sxx = sum(c[p] * (S(x, p) ** 2 - S(x, 2 * p)) for p in range(4)) / (50 * 49)
    syy = sum(c[p] * (S(y, p) ** 2 - S(y, 2 * p)) for p in range(4)) / (60 * 59)
    sxy = sum(c[p] * S(x, p) * S(y, p) for p in range(4)) / (50 * 60)
    got = ev.polynomial_mmd2_unbiased(x[:, None], y[:, None])
    np.testing.assert_allclose(got, sxx + syy - 2 * sxy, rtol=1e-10)


def test_kid_is_unbiased_for_gaussians_closed_form():
    # Population MMD^2 for k = 1 + 3xy + 3x^2y^2 + x^3y^3 is
    # 3 (E X - E Y)^2 + 3 (E X^2 - E Y^2)^2 + (E X^3 - E Y^3)^2.
    # X ~ N(0, 0.5^2): moments 0, 0.25, 0; Y ~ N(0.3, 0.5^2): 0.3, 0.34, 0.3^3 + 3 * 0.3 * 0.25.
    want = 3 * 0.3**2 + 3 * 0.09**2 + (0.027 + 0.225) ** 2
    rng = np.random.default_rng(9)
    vals = [
        ev.polynomial_mmd2_unbiased(rng.normal(0, 0.5, (1000, 1)), rng.normal(0.3, 0.5, (1000, 1)))
        for _ in range(20)
    ]
    assert np.mean(vals) == pytest.approx(want, abs=0.06)  # MC standard error ~0.015
    same = [
        ev.polynomial_mmd2_unbiased(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)))
        for _ in range(10)
    ]
    assert abs(np.mean(same)) < 0.02


def test_kid_subsets_deterministic_and_full_set_path():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(300, 4)), rng.normal(size=(250, 4)) + 0.2
    a = ev.kernel_inception_distance(x, y, num_subsets=5, subset_size=100, seed=1)
    b = ev.kernel_inception_distance(x, y, num_subsets=5, subset_size=100, seed=1)
    assert a == b
    full = ev.kernel_inception_distance(x, y, subset_size=1000)
    assert full == ev.polynomial_mmd2_unbiased(x, y)


# ------------------------------------------------------------------------ extractors


def test_inception_path_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="tfhub.dev/tensorflow/tfgan/eval/inception"):
        ev.get_feature_extractor("CIFAR10")
    fake = lambda images: (np.zeros((len(images), 3)), np.zeros((len(images), 2)))  # noqa: E731
    assert ev.get_feature_extractor("CIFAR10", extractor=fake) is fake
    assert isinstance(fake, ev.FeatureExtractor)


def test_compute_statistics_and_reference_npz(tmp_path):
    rng = np.random.default_rng(11)
    extractor = lambda im: (im.reshape(len(im), -1), im.reshape(len(im), -1)[:, :3])  # noqa: E731
    batches = [rng.random((8, 2, 2, 1)) for _ in range(5)]
    fs, ls = ev.compute_statistics(extractor, batches, keep=10)
    allf = np.concatenate([b.reshape(8, -1) for b in batches])
    np.testing.assert_allclose(fs.cov, np.cov(allf, rowvar=False), rtol=1e-10)
    assert ls.count == 40 and fs.features.shape == (10, 4)
    np.savez(tmp_path / "stats.npz", pool_3=allf)
    ref = ev.load_reference_npz(str(tmp_path / "stats.npz"))
    assert ev.fid_from_stats(ref, fs) == pytest.approx(0.0, abs=1e-10)
    np.savez(tmp_path / "musig.npz", mu=allf.mean(0), sigma=np.cov(allf, rowvar=False))
    ref2 = ev.load_reference_npz(str(tmp_path / "musig.npz"))
    assert ev.fid_from_stats(ref2, fs) == pytest.approx(0.0, abs=1e-10)


# ----------------------------------------------------------------------------- digits


def _blobs(rng, n, size):
    b = np.stack([gaussian_filter(rng.random((size, size)), size / 5) for _ in range(n)])
    lo, hi = b.min(axis=(1, 2), keepdims=True), b.max(axis=(1, 2), keepdims=True)
    return ((b - lo) / (hi - lo))[..., None].astype(np.float32)


def test_digits_classifier_is_real_and_cached():
    clf = ev.digits_feature_extractor()
    assert clf is ev.digits_feature_extractor()
    assert clf.test_accuracy > 0.95
    x, y = load_digits_images("test")
    feats, logits = clf(x)
    assert feats.shape == (360, clf.feature_dim) and logits.shape == (360, 10)
    assert np.mean(logits.argmax(1) == y) == pytest.approx(clf.test_accuracy)


@pytest.mark.parametrize("size", [8, 16])
def test_digits_metrics_calibration(size):
    rng = np.random.default_rng(12)
    train, _ = load_digits_images("train", image_size=size)
    test, test_labels = load_digits_images("test", image_size=size)
    real = ev.digits_metrics(train[:360])
    noise = ev.digits_metrics(rng.random((360, size, size, 1)).astype(np.float32))
    blobs = ev.digits_metrics(_blobs(rng, 360, size))
    assert set(real) >= {"fid", "kid", "inception_score", "classifier_confidence"}
    # Real (held-out) digits: low FID, IS near 10 classes, confident classifier.
    assert real["fid"] < 5.0
    assert real["inception_score"] > 9.0
    assert real["classifier_confidence"] > 0.95
    assert abs(real["kid"]) < 1.0
    # Noise and blurred blobs are far away on every metric.
    for bad in (noise, blobs):
        assert bad["fid"] > 15 * real["fid"] and bad["fid"] > 40.0
        assert bad["kid"] > 5.0
        assert bad["inception_score"] < 4.0
    acc = ev.digits_metrics(test, labels=test_labels)["classifier_accuracy"]
    assert acc > 0.95


def test_digits_metrics_input_errors():
    with pytest.raises(ValueError, match="grayscale"):
        ev.digits_metrics(np.zeros((4, 8, 8, 3)))
    with pytest.raises(ValueError, match="NaN"):
        ev.digits_metrics(np.full((4, 8, 8, 1), np.nan))


# ---------------------------------------------------------------------------------- toy SWD


def test_toy_metrics_exact_samples_sit_at_the_floor():
    import jax

    from scoresde_jax import analytic
    from scoresde_jax.data import get_toy_distribution

    mix = get_toy_distribution("TOY_8GAUSSIANS")
    exact = np.asarray(analytic.sample_mixture(mix, jax.random.key(3), 1000))
    m = ev.toy_metrics(mix, exact, seed=0)
    assert set(m) == {"swd", "swd_floor", "swd_prior"}
    # Exact samples sit at the sampling-noise floor (noisy: mode counts fluctuate); N(0, I) is
    # far away (swd_prior ~ 0.56 vs a floor of ~0.15 at N = 1000).
    assert m["swd"] < 2 * m["swd_floor"] + 0.05
    assert m["swd_prior"] > 2 * m["swd"]
    assert m["swd_prior"] > 3 * m["swd_floor"]
    # A dataset name gives the same numbers; non-finite samples score inf.
    assert ev.toy_metrics("toy_8gaussians", exact, seed=0) == m
    bad = exact.copy()
    bad[0, 0] = np.nan
    assert ev.toy_metrics(mix, bad, seed=0)["swd"] == float("inf")
    with pytest.raises(TypeError, match="GaussianMixture"):
        ev.toy_metrics(3, exact)
