"""Sample-quality metrics: FID, Inception Score, KID, an offline digits metric, toy-data SWD.

* :mod:`.metrics` -- the math on feature / logit arrays:
  FID = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}) (:func:`frechet_distance`);
  IS = exp(E_x KL(p(y|x) || p(y))) (:func:`inception_score`);
  KID = mean over subsets of the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3
  (:func:`kernel_inception_distance`); streaming :class:`FeatureStats` / :class:`LogitStats`.
* :mod:`.features` -- the :class:`FeatureExtractor` protocol
  (``images (N, H, W, C) in [0, 1] -> (pool_features (N, F), logits (N, K))``),
  :func:`get_feature_extractor`, :func:`compute_statistics`, :func:`load_reference_npz`.
* :mod:`.digits` -- an MLP classifier on the embedded digits as the feature network, and
  :func:`digits_metrics` against the held-out test digits.
* :mod:`.inception` (+ :mod:`.inception_net`) -- the FID Inception-v3 in Flax:
  :func:`convert_weights` (``scoresde convert-inception``), :func:`load_inception`.
* :mod:`.reference` -- statistics files (:func:`save_reference`, :func:`load_reference`, the
  official ``assets/stats`` layout), :func:`feature_network` of a dataset, :func:`quality_report`.
* :mod:`.toy` -- :func:`toy_metrics`: sliced Wasserstein distances to exact samples of a 2-D
  mixture.
"""

from __future__ import annotations

from scoresde_jax.evaluation.digits import (
    DigitsClassifier,
    class_accuracy,
    digits_feature_extractor,
    digits_metrics,
    digits_reference,
)
from scoresde_jax.evaluation.features import (
    INCEPTION_HELP,
    FeatureExtractor,
    compute_statistics,
    get_feature_extractor,
    load_reference_npz,
)
from scoresde_jax.evaluation.metrics import (
    FeatureStats,
    LogitStats,
    fid_from_features,
    fid_from_stats,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    polynomial_mmd2_unbiased,
    trace_sqrt_product,
)
from scoresde_jax.evaluation.inception import (
    CONVERT_COMMAND,
    PREPROCESS_MODES,
    InceptionExtractor,
    InceptionV3,
    convert_weights,
    load_inception,
    preprocess_images,
    random_state_dict,
)
from scoresde_jax.evaluation.reference import (
    STATS_COMMAND,
    Reference,
    feature_network,
    load_reference,
    quality_report,
    save_reference,
)
from scoresde_jax.evaluation.toy import toy_metrics

__all__ = [
    "CONVERT_COMMAND",
    "InceptionExtractor",
    "InceptionV3",
    "PREPROCESS_MODES",
    "Reference",
    "STATS_COMMAND",
    "convert_weights",
    "feature_network",
    "load_inception",
    "load_reference",
    "preprocess_images",
    "quality_report",
    "random_state_dict",
    "save_reference",
    "DigitsClassifier",
    "class_accuracy",
    "FeatureExtractor",
    "FeatureStats",
    "LogitStats",
    "compute_statistics",
    "digits_feature_extractor",
    "digits_metrics",
    "digits_reference",
    "fid_from_features",
    "fid_from_stats",
    "frechet_distance",
    "get_feature_extractor",
    "inception_score",
    "kernel_inception_distance",
    "load_reference_npz",
    "polynomial_mmd2_unbiased",
    "toy_metrics",
    "trace_sqrt_product",
]
