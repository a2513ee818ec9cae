"""NCSN++ on FFHQ 256x256 with the VE SDE (continuous).

The paper's configuration differs from ``ve/celebahq_256_ncsnpp_continuous.py`` only in the dataset.
"""

from __future__ import annotations

import ml_collections

from configs.ve.celebahq_256_ncsnpp_continuous import get_config as _base_config


def get_config() -> ml_collections.ConfigDict:
    config = _base_config()
    config.data.dataset = "FFHQ"
    return config
