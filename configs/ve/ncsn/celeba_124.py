"""NCSNv1 on CelebA with NCSNv2 techniques 1, 2, 4 only."""

from __future__ import annotations

import ml_collections

from configs.default_celeba_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()

    # training
    training = config.training
    training.sde = "vesde"
    training.continuous = False

    # sampling
    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 5
    sampling.snr = 0.128

    # model
    model = config.model
    model.name = "ncsn"
    model.scale_by_sigma = False
    model.num_scales = 500
    model.ema_rate = 0.0
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    # optim
    optim = config.optim
    optim.weight_decay = 0
    optim.optimizer = "Adam"
    optim.lr = 0.001
    optim.beta1 = 0.9
    optim.amsgrad = False
    optim.eps = 1e-08
    optim.warmup = 0
    optim.grad_clip = -1.0

    return config
