"""Default hyperparameters for CelebA (64x64), official score_sde layout and keys.

The official defaults for CelebA differ from CIFAR-10's only in the entries set here.
"""

from __future__ import annotations

import ml_collections

from configs.default_cifar10_configs import get_default_configs as _cifar10_defaults


def get_default_configs() -> ml_collections.ConfigDict:
    config = _cifar10_defaults()
    config.sampling.snr = 0.17
    config.eval.begin_ckpt = 1
    config.eval.enable_sampling = True
    config.data.dataset = "CELEBA"
    config.data.image_size = 64
    with config.model.ignore_type():  # CIFAR-10's default is the int 50
        config.model.sigma_max = 90.
    return config
