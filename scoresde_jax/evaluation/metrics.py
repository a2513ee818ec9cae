"""Sample-quality metric math on feature / logit arrays (numpy, float64 internally).

* FID, :func:`frechet_distance` -- the Frechet (2-Wasserstein^2) distance between the Gaussians
  fitted to two feature sets,

      FID = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}),

  with tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i(S_1^{1/2} S_2 S_1^{1/2})) from symmetric
  eigendecompositions (:func:`trace_sqrt_product`), real and stable for singular covariances.
* IS, :func:`inception_score` -- from classifier logits,

      IS = exp(E_x KL(p(y|x) || p(y))),   p(y) = E_x p(y|x),

  one split over all samples by default, as tfgan's ``classifier_score_from_logits`` used by
  score_sde.
* KID, :func:`kernel_inception_distance` -- the unbiased MMD^2 (:func:`polynomial_mmd2_unbiased`)
  with the polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
  (Binkowski et al., 2018).
* :class:`FeatureStats` / :class:`LogitStats` -- streaming accumulators (Chan et al. parallel
  mean/covariance updates; running sums for IS), so large sample sets need not be held in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "FeatureStats",
    "LogitStats",
    "fid_from_features",
    "fid_from_stats",
    "frechet_distance",
    "inception_score",
    "kernel_inception_distance",
    "polynomial_mmd2_unbiased",
    "trace_sqrt_product",
]


# --------------------------------------------------------------------------------------------
# Frechet distance.
# --------------------------------------------------------------------------------------------


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric PSD matrix (negative eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (S_1 S_2)^{1/2} = sum_i sqrt(lambda_i(S_1^{1/2} S_2 S_1^{1/2})) for PSD S_1, S_2."""
    s1 = _sym_sqrt(np.asarray(sigma1, np.float64))
    m = s1 @ np.asarray(sigma2, np.float64) @ s1
    lam = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sum(np.sqrt(np.clip(lam, 0.0, None))))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet (2-Wasserstein^2) distance between N(mu1, sigma1) and N(mu2, sigma2).

        d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr (sigma1 sigma2)^{1/2}

    Computed in float64; clipped at 0 (it can only go negative by round-off).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {sigma1.shape}, mu2 {mu2.shape}, "
            f"sigma2 {sigma2.shape} do not match (need (F,), (F, F) for both)."
        )
    diff = mu1 - mu2
    tr_sqrt = trace_sqrt_product(sigma1, sigma2)
    d2 = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_sqrt
    return float(max(d2, 0.0))


# --------------------------------------------------------------------------------------------
# Streaming statistics.
# --------------------------------------------------------------------------------------------


def _as_2d(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what} must have shape (N, F), got {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contain non-finite values (NaN/inf); check the samples.")
    return x


class FeatureStats:
    """Streaming mean / covariance of feature vectors (float64, Chan et al. pairwise updates).

    ``update(features (N, F))`` folds in a batch; ``mean`` and ``cov`` (unbiased, ddof=1) are
    available at any time. ``keep`` > 0 also keeps the first ``keep`` feature vectors (for KID).
    ``merge`` combines accumulators from different hosts/shards.
    """

    def __init__(self, dim: int | None = None, *, keep: int = 0):
        self.dim = dim
        self.keep = int(keep)
        self.count = 0
        self._mean = None if dim is None else np.zeros(dim)
        self._m2 = None if dim is None else np.zeros((dim, dim))
        self._kept: list[np.ndarray] = []
        self._num_kept = 0

    def update(self, features: Any) -> "FeatureStats":
        x = _as_2d(features, "features")
        n_b = x.shape[0]
        if n_b == 0:
            return self
        if self.dim is None:
            self.dim = x.shape[1]
            self._mean, self._m2 = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        if x.shape[1] != self.dim:
            raise ValueError(f"features have dimension {x.shape[1]}, expected {self.dim}.")
        mean_b = x.mean(0)
        xc = x - mean_b
        self._combine(n_b, mean_b, xc.T @ xc)
        if self._num_kept < self.keep:
            take = x[: self.keep - self._num_kept]
            self._kept.append(take)
            self._num_kept += len(take)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        n_a = self.count
        n = n_a + n_b
        delta = mean_b - self._mean
        self._mean = self._mean + delta * (n_b / n)
        self._m2 = self._m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.count = n

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Fold another accumulator into this one (order-independent up to round-off)."""
        if other.count == 0:
            return self
        if self.dim is None:
            self.dim = other.dim
            self._mean, self._m2 = np.zeros(self.dim), np.zeros((self.dim, self.dim))
        if other.dim != self.dim:
            raise ValueError(
                f"Cannot merge feature stats of dimension {other.dim} into {self.dim}."
            )
        self._combine(other.count, other._mean, other._m2)
        if self._num_kept < self.keep and other._num_kept:
            take = other.features[: self.keep - self._num_kept]
            self._kept.append(take)
            self._num_kept += len(take)
        return self

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("FeatureStats is empty: call update() with features first.")
        return self._mean.copy()

    @property
    def cov(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 feature vectors, got {self.count}.")
        return self._m2 / (self.count - 1)

    @property
    def features(self) -> np.ndarray:
        """The first ``keep`` feature vectors seen (empty (0, F) when keep == 0)."""
        if not self._kept:
            return np.zeros((0, self.dim or 0))
        return np.concatenate(self._kept)

    @classmethod
    def from_features(cls, features: Any, *, keep: int = 0) -> "FeatureStats":
        return cls(keep=keep).update(features)


class LogitStats:
    """Streaming Inception Score: running sums of p(y|x) and of sum_y p log p.

    IS = exp(E_x KL(p(y|x) || p(y))) = exp(E_x[sum_y p log p] - sum_y p(y) log p(y)),
    with p(y) = E_x p(y|x).
    """

    def __init__(self):
        self.count = 0
        self._sum_p = None
        self._sum_neg_entropy = 0.0

    def update(self, logits: Any) -> "LogitStats":
        logits = _as_2d(logits, "logits")
        if len(logits) == 0:
            return self
        logp = logits - logits.max(1, keepdims=True)
        logp = logp - np.log(np.sum(np.exp(logp), 1, keepdims=True))
        p = np.exp(logp)
        if self._sum_p is None:
            self._sum_p = np.zeros(logits.shape[1])
        self._sum_p += p.sum(0)
        self._sum_neg_entropy += float(np.sum(p * logp))
        self.count += len(logits)
        return self

    def merge(self, other: "LogitStats") -> "LogitStats":
        if other.count:
            self._sum_p = other._sum_p.copy() if self._sum_p is None else self._sum_p + other._sum_p
            self._sum_neg_entropy += other._sum_neg_entropy
            self.count += other.count
        return self

    def inception_score(self) -> float:
        if self.count == 0:
            raise ValueError("LogitStats is empty: call update() with logits first.")
        py = self._sum_p / self.count
        log_py = np.log(np.where(py > 0, py, 1.0))
        kl = self._sum_neg_entropy / self.count - float(np.sum(py * log_py))
        return float(np.exp(kl))


# --------------------------------------------------------------------------------------------
# Metrics from arrays.
# --------------------------------------------------------------------------------------------


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two accumulated feature distributions."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def fid_from_features(f1: Any, f2: Any) -> float:
    """FID between two feature arrays (N1, F) and (N2, F)."""
    return fid_from_stats(FeatureStats.from_features(f1), FeatureStats.from_features(f2))


def inception_score(logits: Any, *, num_splits: int = 1) -> float:
    """exp(E_x KL(p(y|x) || p(y))) from logits (N, K); mean over ``num_splits`` equal splits.

    ``num_splits=1`` is tfgan's ``classifier_score_from_logits`` (score_sde); 10 is the
    convention of Salimans et al. (2016).
    """
    logits = _as_2d(logits, "logits")
    parts = np.array_split(logits, num_splits)
    return float(np.mean([LogitStats().update(p).inception_score() for p in parts]))


def polynomial_mmd2_unbiased(
    x: Any, y: Any, *, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased MMD^2 with k(a, b) = (gamma a.b + coef0)^degree, gamma = 1/F by default.

        MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
                  - 2 sum_{i, j} k(x_i, y_j) / (m n)

    (the 'unbiased' estimator of Binkowski et al., 2018, used for KID).
    """
    x, y = _as_2d(x, "x"), _as_2d(y, "y")
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least 2 samples per set, got {m} and {n}.")
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    kxx = (gamma * (x @ x.T) + coef0) ** degree
    kyy = (gamma * (y @ y.T) + coef0) ** degree
    kxy = (gamma * (x @ y.T) + coef0) ** degree
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * n))


def kernel_inception_distance(
    f1: Any,
    f2: Any,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
    coef0: float = 1.0,
) -> float:
    """KID: mean unbiased polynomial-kernel MMD^2 over ``num_subsets`` random subsets.

    Each subset draws ``min(subset_size, N1, N2)`` rows without replacement from each set (the
    reference implementation of Binkowski et al.). When both sets have at most ``subset_size``
    rows the full sets are used once (deterministic).
    """
    f1, f2 = _as_2d(f1, "features 1"), _as_2d(f2, "features 2")
    if len(f1) <= subset_size and len(f2) <= subset_size:
        return polynomial_mmd2_unbiased(f1, f2, degree=degree, coef0=coef0)
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    vals = [
        polynomial_mmd2_unbiased(
            f1[rng.choice(len(f1), m, replace=False)],
            f2[rng.choice(len(f2), m, replace=False)],
            degree=degree,
            coef0=coef0,
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(vals))
