"""NCSN++ on CIFAR-10 with the EDM recipe (Karras et al. 2022, the NCSN++ column of Table 2 with EDM's
preconditioning, loss and Heun sampler; :mod:`configs.edm.edm_recipe`).

EDM's own NCSN++ network (``SongUNet`` with a Fourier embedding of ``c_noise = log(sigma) / 4``, the
residual input pyramid, FIR [1, 3, 3, 1] resampling: ``model.name = 'edm_song_unet'``, the network that
``scoresde convert --from edm`` loads) with EDM's CIFAR-10 training settings (as ``cifar10_ddpmpp_edm``).
Not reproduced here: EDM's geometric augmentation pipeline (``augment_dim = 0``).
"""

from __future__ import annotations

import ml_collections

from configs.edm.edm_recipe import apply_edm_recipe, use_edm_song_unet
from configs.ve.cifar10_ncsnpp_continuous import get_config as get_ncsnpp_config


def get_config() -> ml_collections.ConfigDict:
    config = use_edm_song_unet(apply_edm_recipe(get_ncsnpp_config()), "ncsnpp")

    training = config.training
    training.batch_size = 512
    training.n_iters = 390_625  # 200M images
    training.reduce_mean = False  # EDM sums the squared error over pixels

    config.model.ema_rate = 0.5 ** (512 / 500_000)  # EDM's EMA half-life of 500k images

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 19_531  # 10M images
    optim.grad_clip = -1.0
    return config
