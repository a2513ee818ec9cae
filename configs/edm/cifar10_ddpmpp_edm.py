"""DDPM++ on CIFAR-10 with the EDM recipe (Karras et al. 2022, config F of Table 2: unconditional
CIFAR-10, FID 1.97 at 35 NFE with EDM's own code and data augmentation).

EDM's own DDPM++ network (``SongUNet`` with a positional embedding, ``model.name = 'edm_song_unet'``,
the network that ``scoresde convert --from edm`` loads) with EDM's settings: channel multipliers
(2, 2, 2), dropout 0.13, batch 512, Adam lr 1e-3 with a 10M-image ramp-up and no gradient clipping,
an EMA half-life of 500k images, 200M training images; EDM's preconditioning, loss and Heun sampler
(:mod:`configs.edm.edm_recipe`).  Not reproduced here: EDM's geometric augmentation pipeline
(``augment_dim = 0``).
"""

from __future__ import annotations

import ml_collections

from configs.edm.edm_recipe import apply_edm_recipe, use_edm_song_unet
from configs.vp.cifar10_ddpmpp_continuous import get_config as get_ddpmpp_config


def get_config() -> ml_collections.ConfigDict:
    config = use_edm_song_unet(apply_edm_recipe(get_ddpmpp_config()), "ddpmpp")

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
