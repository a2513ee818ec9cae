"""NCSNv2 on LSUN bedroom 128x128 (the SMLD baseline)."""

from __future__ import annotations

import ml_collections

from configs.default_lsun_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()

    # training
    training = config.training
    training.sde = "vesde"
    training.continuous = False
    training.batch_size = 128

    # sampling
    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "none"
    sampling.corrector = "ald"
    sampling.n_steps_each = 3
    sampling.snr = 0.095

    # data
    data = config.data
    data.category = "bedroom"
    data.image_size = 128

    # model
    model = config.model
    model.name = "ncsnv2_128"
    model.scale_by_sigma = True
    model.sigma_max = 190
    model.num_scales = 1086
    model.sigma_min = 0.01
    model.ema_rate = 0.9999
    model.normalization = "InstanceNorm++"
    model.nonlinearity = "elu"
    model.nf = 128
    model.interpolation = "bilinear"

    # optim
    optim = config.optim
    optim.weight_decay = 0
    optim.optimizer = "Adam"
    optim.lr = 0.0001
    optim.beta1 = 0.9
    optim.amsgrad = False
    optim.eps = 1e-08
    optim.warmup = 0
    optim.grad_clip = -1.0

    return config
