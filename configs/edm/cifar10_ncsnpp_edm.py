"""NCSN++ on CIFAR-10 with the EDM recipe (Karras et al. 2022, the NCSN++ network of Table 2 with EDM's
preconditioning, loss and Heun sampler; :mod:`configs.edm.edm_recipe`).

The NCSN++ network of ``ve/cifar10_ncsnpp_continuous`` (FIR [1, 3, 3, 1] resampling, the residual input
pyramid) with EDM's training settings (as ``cifar10_ddpmpp_edm``).  The noise label ``log(sigma) / 4``
enters through a positional embedding (EDM's NCSN++ uses a Fourier embedding of it).
"""

from __future__ import annotations

import ml_collections

from configs.edm.edm_recipe import apply_edm_recipe
from configs.ve.cifar10_ncsnpp_continuous import get_config as get_ncsnpp_config


def get_config() -> ml_collections.ConfigDict:
    config = apply_edm_recipe(get_ncsnpp_config())

    training = config.training
    training.batch_size = 512
    training.n_iters = 390_625  # 200M images
    training.reduce_mean = False

    model = config.model
    model.ch_mult = (2, 2, 2)
    model.dropout = 0.13
    model.ema_rate = 0.5 ** (512 / 500_000)

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 19_531
    optim.grad_clip = -1.0
    return config
