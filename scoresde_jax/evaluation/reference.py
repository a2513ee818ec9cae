"""Reference statistics files and the sample-quality report of the eval job.

A statistics file is score_sde's ``assets/stats/<dataset>_stats.npz`` layout: ``pool_3`` (the raw
``(N, F)`` features of every training image, so KID can be computed), to which
:func:`save_reference` adds ``mu`` (F,) and ``sigma`` (F, F) (float64, ``ddof=1``) so pytorch-fid /
TTUR readers work too. :func:`load_reference` accepts the official file as it is, or a
``mu``/``sigma``-only file (then no KID).

:func:`feature_network` is the one place that picks the feature network of a dataset: the FID
Inception-v3 (:mod:`.inception`, from a converted weights file) for image datasets, the digits
classifier (:mod:`.digits`) for ``DIGITS``; both take ``uint8`` images ``(N, H, W, C)``.
:func:`quality_report` gives FID = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}),
IS = exp(E KL(p(y|x) || p(y))) in one split (the paper's code) and in 10 splits, and KID.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import numpy as np

from scoresde_jax.evaluation.digits import digits_feature_extractor
from scoresde_jax.evaluation.inception import CONVERT_COMMAND, load_inception
from scoresde_jax.evaluation.metrics import (
    frechet_distance,
    inception_score,
    kernel_inception_distance,
)

__all__ = [
    "STATS_COMMAND",
    "Reference",
    "feature_network",
    "load_reference",
    "quality_report",
    "save_reference",
]

STATS_COMMAND = "scoresde stats --config CONFIG --out STATS.npz"
FeatureNet = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Reference(NamedTuple):
    """Reference feature statistics: mean ``(F,)``, covariance ``(F, F)``, raw features or None,
    and the number of images."""

    mu: np.ndarray
    sigma: np.ndarray
    pool_3: np.ndarray | None
    count: int


def reference_from_features(pool_3: Any) -> Reference:
    f = np.asarray(pool_3, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"reference features must be (N >= 2, F), got shape {f.shape}.")
    return Reference(f.mean(0), np.cov(f, rowvar=False), np.asarray(pool_3), len(f))


def save_reference(path: str, pool_3: Any, **extra: Any) -> str:
    """Write ``pool_3`` (float32 as the official files), ``mu``, ``sigma`` and ``extra`` arrays
    to ``path`` (atomically: a temporary file renamed). Returns ``path``."""
    ref = reference_from_features(pool_3)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"  # one per writer: concurrent jobs never share it
    with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to other names
        np.savez(f, pool_3=np.asarray(pool_3, np.float32), mu=ref.mu, sigma=ref.sigma, **extra)
    os.replace(tmp, path)
    return path


def load_reference(path: str) -> Reference:
    """A statistics file: ``pool_3`` (official score_sde layout; ``mu``/``sigma`` recomputed
    from it) or ``mu`` + ``sigma`` only. A missing file is a ``FileNotFoundError`` naming the
    command that makes it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no reference statistics file at {path!r}; make it with `{STATS_COMMAND}` (or use "
            "score_sde's assets/stats/cifar10_stats.npz) and pass it with --stats or "
            "--config.eval.stats_path.")
    with np.load(path, allow_pickle=False) as z:
        if "pool_3" in z.files:
            return reference_from_features(z["pool_3"])
        if "mu" in z.files and "sigma" in z.files:
            return Reference(np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64),
                             None, 0)
        raise ValueError(f"{path!r} has neither 'pool_3' nor 'mu'/'sigma' (keys: {z.files}); "
                         f"rebuild it with `{STATS_COMMAND}`.")


def check_inception_path(dataset: str, inception_path: str | None) -> None:
    """A ``FileNotFoundError`` naming ``convert-inception`` when an image dataset other than
    DIGITS has no converted Inception weights file at ``inception_path``."""
    if str(dataset).upper() == "DIGITS":
        return
    if inception_path is None or not os.path.exists(inception_path):
        raise FileNotFoundError(
            f"no Inception weights file {inception_path!r} for {dataset} FID/IS/KID; make it from "
            f"pt_inception-2015-12-05-6726825d.pth with `{CONVERT_COMMAND}` and pass it with "
            "--inception or --config.eval.inception_path.")


def feature_network(dataset: str, *, inception_path: str | None = None,
                    preprocess: str = "score_sde", batch_size: int | None = None
                    ) -> tuple[FeatureNet, dict]:
    """``(net, info)``: ``net(uint8 images (N, H, W, C)) -> (features (N, F), logits (N, K))``
    and a JSON-able description (``{'features': ..., 'preprocess': ...}``).

    ``DIGITS``: the digits classifier (128-d features, 10 classes). Other image datasets: the FID
    Inception-v3 from ``inception_path`` (a :func:`~.inception.convert_weights` file; a missing
    one is a ``FileNotFoundError`` naming ``convert-inception``), ``pool_3`` and ``logits``,
    each call's images sharded over this process's devices in chunks of at most ``batch_size``
    (and of the extractor's per-device cap, :data:`~.inception.MAX_BATCH_PER_DEVICE`); on
    several hosts every process computes the features of the whole round it is given.
    """
    if str(dataset).upper() == "DIGITS":
        clf = digits_feature_extractor()

        def digits_net(images):
            return clf(np.asarray(images, np.float32) / 255.0)

        return digits_net, {"features": "digits_classifier", "preprocess": "uint8 / 255"}
    check_inception_path(dataset, inception_path)
    ext = load_inception(inception_path, preprocess=preprocess)

    def inception_net(images):
        x = np.asarray(images)
        if x.shape[-1] == 1:  # grayscale data: the network wants RGB
            x = np.repeat(x, 3, axis=-1)
        out = ext(x, batch_size=batch_size)
        return out["pool_3"], out["logits"]

    return inception_net, {"features": os.path.abspath(inception_path), "preprocess": preprocess}


def quality_report(features: Any, logits: Any, ref: Reference, *, kid_subsets: int = 100,
                   kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{'fid', 'inception_score' (one split), 'inception_score_10' (mean of 10 splits),
    'inception_score_10_std', 'kid' (None without reference ``pool_3``)}``."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need at least 2 samples' features (N, F), got shape {f.shape}.")
    if f.shape[1] != len(ref.mu):
        raise ValueError(f"features have dimension {f.shape[1]} but the reference statistics "
                         f"{len(ref.mu)}: they come from another feature network; rebuild them "
                         f"with `{STATS_COMMAND}`.")
    num_splits = min(10, len(f))  # 10 splits as Salimans et al. (fewer for tiny sample sets)
    splits = [inception_score(p) for p in np.array_split(np.asarray(logits), num_splits)]
    kid = None
    if ref.pool_3 is not None:
        kid = kernel_inception_distance(f, ref.pool_3, num_subsets=kid_subsets,
                                        subset_size=kid_subset_size, seed=seed)
    return {
        "fid": frechet_distance(f.mean(0), np.cov(f, rowvar=False), ref.mu, ref.sigma),
        "inception_score": inception_score(logits),
        "inception_score_10": float(np.mean(splits)),
        "inception_score_10_std": float(np.std(splits)),
        "kid": kid,
    }
