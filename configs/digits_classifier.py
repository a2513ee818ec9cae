"""A noise-conditional classifier on the embedded 8x8 digits, for classifier guidance of the digits
score models (paper appendix I.1): cross-entropy on data perturbed by the continuous VP SDE of
``configs/digits_ddpmpp.py`` at ``t ~ U(eps, 1)``, conditioned on ``(N - 1) t`` (positional
embedding), the label convention of those score models.

``scoresde train --config configs/digits_classifier.py --workdir runs/digits_clf`` (the same loop:
EMA, checkpoints, sharding, resume); use it with
``scoresde_jax.guidance.model_classifier_fn(sde, classifier, params)``.
"""

from __future__ import annotations

import ml_collections

from configs.digits_ddpmpp import get_config as get_digits_config


def get_config() -> ml_collections.ConfigDict:
    config = get_digits_config()
    training = config.training
    training.n_iters = 1500
    training.snapshot_sampling = False
    training.eps = 1e-5

    model = config.model
    model.name = "classifier"
    model.num_classes = 10
    model.nf = 32
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 1
    model.dropout = 0.0
    model.embedding_type = "positional"
    model.ema_rate = 0.99
    config.optim.lr = 1e-3
    return config
