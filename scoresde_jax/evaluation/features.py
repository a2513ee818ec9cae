"""Feature extractors and reference statistics: images -> (pool features, logits) -> stats.

A :class:`FeatureExtractor` maps ``images (N, H, W, C) in [0, 1]`` to
``(pool_features (N, F), logits (N, K))``; :func:`compute_statistics` streams image batches
through one into :class:`~scoresde_jax.evaluation.metrics.FeatureStats` (for FID / KID) and
:class:`~scoresde_jax.evaluation.metrics.LogitStats` (for IS), and :func:`load_reference_npz`
reads score_sde's reference statistics files. The paper's Inception-v3 (TF-Hub) network cannot
be downloaded here: :func:`get_feature_extractor` says what to supply; for the embedded digits
data it returns the offline classifier of :mod:`scoresde_jax.evaluation.digits`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from scoresde_jax.evaluation.digits import digits_feature_extractor
from scoresde_jax.evaluation.metrics import FeatureStats, LogitStats

__all__ = [
    "INCEPTION_HELP",
    "FeatureExtractor",
    "compute_statistics",
    "get_feature_extractor",
    "load_reference_npz",
]


@runtime_checkable
class FeatureExtractor(Protocol):
    """``images (N, H, W, C) float in [0, 1] -> (pool_features (N, F), logits (N, K))``."""

    def __call__(self, images: Any) -> tuple[np.ndarray, np.ndarray]: ...


INCEPTION_HELP = (
    "FID / IS / KID for {name} use Inception-v3 features, as in the paper: the TF-Hub module "
    "'https://tfhub.dev/tensorflow/tfgan/eval/inception/1' (tfgan's classifier, 'pool_3' 2048-d "
    "features and 1008-class 'logits', images resized to 299x299 in [-1, 1]). Its weights cannot "
    "be downloaded at run time and are not bundled: convert the public port "
    "'pt_inception-2015-12-05-6726825d.pth' (pytorch-fid / torch-fidelity) once with "
    "`scoresde convert-inception SRC --out inception_fid.npz` and load it with "
    "evaluation.load_inception (its .as_feature_extractor() is an extractor for "
    "compute_statistics); `scoresde eval --inception inception_fid.npz` uses it directly. "
    "Reference statistics: `scoresde stats`, or score_sde's 'assets/stats/cifar10_stats.npz' "
    "(key 'pool_3', evaluation.load_reference). For the embedded DIGITS data use "
    "evaluation.digits_metrics."
)


def get_feature_extractor(
    dataset: str, *, extractor: FeatureExtractor | None = None
) -> FeatureExtractor:
    """The feature extractor for the dataset named ``dataset`` (``config.data.dataset``).

    'DIGITS' -> :func:`~scoresde_jax.evaluation.digits.digits_feature_extractor`. The Inception-based datasets need a
    user-supplied ``extractor`` (returned as is); without one a ``FileNotFoundError`` explains
    which weights to provide.
    """
    if extractor is not None:
        if not callable(extractor):
            raise TypeError(
                f"extractor must be callable images -> (features, logits), got {extractor!r}."
            )
        return extractor
    if dataset == "DIGITS":
        return digits_feature_extractor()
    raise FileNotFoundError(INCEPTION_HELP.format(name=dataset))


def load_reference_npz(path: str, *, key: str = "pool_3", keep: int = 0) -> FeatureStats:
    """Reference feature statistics from a score_sde stats file (``np.savez(pool_3=features)``).

    Also accepts files with precomputed ``mu`` and ``sigma`` (pytorch-fid / TTUR format): the
    returned stats then reproduce that mean and covariance (``count`` is not meaningful, no KID).
    """
    with np.load(path) as f:
        if key in f:
            return FeatureStats(keep=keep).update(f[key])
        if "mu" in f and "sigma" in f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
            st = FeatureStats(dim=len(mu))
            st.count = 2
            st._mean, st._m2 = mu, sigma.copy()  # cov = m2 / (count - 1) = sigma
            return st
        raise KeyError(
            f"{path} has neither '{key}' features nor 'mu'/'sigma'; keys: {list(f.keys())}."
        )


def compute_statistics(
    extractor: FeatureExtractor,
    batches: Iterable[Any],
    *,
    keep: int = 0,
) -> tuple[FeatureStats, LogitStats]:
    """Stream image batches ``(B, H, W, C)`` in [0, 1] through ``extractor``; accumulate stats."""
    fstats, lstats = FeatureStats(keep=keep), LogitStats()
    for images in batches:
        feats, logits = extractor(images)
        fstats.update(feats)
        lstats.update(logits)
    return fstats, lstats
