"""NCSN++ on FFHQ 1024x1024 with the VE SDE (continuous).

The paper's configuration differs from ``ve/celebahq_ncsnpp_continuous.py`` in the dataset and in
``reduce_mean``.
"""

from __future__ import annotations

import ml_collections

from configs.ve.celebahq_ncsnpp_continuous import get_config as _base_config


def get_config() -> ml_collections.ConfigDict:
    config = _base_config()
    config.training.reduce_mean = True
    config.data.dataset = "FFHQ"
    return config
