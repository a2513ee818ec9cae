"""NCSN++ on CIFAR-10 with the sub-VP SDE (continuous).

The paper's configuration differs from ``vp/cifar10_ncsnpp_continuous.py`` only in the SDE.
"""

from __future__ import annotations

import ml_collections

from configs.vp.cifar10_ncsnpp_continuous import get_config as _base_config


def get_config() -> ml_collections.ConfigDict:
    config = _base_config()
    config.training.sde = "subvpsde"
    return config
