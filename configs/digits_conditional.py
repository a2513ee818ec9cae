"""Class-conditional DDPM++ (continuous VP SDE) on the embedded 8x8 digits, with label dropout for
classifier-free guidance.

``configs/digits_ddpmpp.py`` plus ``model.num_classes = 10`` (a label embedding added to the time
embedding) and ``model.class_dropout = 0.1`` (the null class 10). Train and evaluate with
``scoresde train --config configs/digits_conditional.py --workdir runs/digits_cond`` and
``scoresde eval ...``: the eval draws ``eval.num_samples`` samples for the classes ``eval.classes``
(cycled) at guidance ``eval.guidance`` and reports ``class_accuracy`` (the embedded digits
classifier on them) with the class-conditional FID. Sample one class with
``scoresde sample ... --class 3 --guidance 2.0``.
"""

from __future__ import annotations

import ml_collections

from configs.digits_ddpmpp import get_config as get_digits_config


def get_config() -> ml_collections.ConfigDict:
    config = get_digits_config()
    config.model.num_classes = 10
    config.model.class_dropout = 0.1
    config.training.snapshot_sampling = False  # the snapshots would show the null class only
    config.eval.classes = tuple(range(10))
    config.eval.guidance = 2.0
    return config
