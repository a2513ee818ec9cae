"""The noise-conditional CIFAR-10 classifier of the paper's class-conditional samples (section 5,
appendix I.1): a Wide-ResNet-28-10-sized network (widths 160 / 320 / 640, 4 residual blocks per
stage) conditioned on the VE noise level ``sigma(t)`` through a Fourier embedding (the official
``wideresnet_noise_conditional`` takes ``ve_noise_scale``), trained with cross-entropy on data
perturbed by the VE SDE of ``configs/ve/cifar10_ncsnpp_continuous.py``.

Here the network is the library's :class:`~scoresde_jax.models.NoiseConditionalClassifier` (BigGAN
residual blocks, the NCSN++ encoder) at those widths, not a port of the official WRN.
``scoresde train --config configs/cifar10_classifier.py --workdir runs/cifar10_clf``.
"""

from __future__ import annotations

import ml_collections

from configs.ve.cifar10_ncsnpp_continuous import get_config as get_ve_config


def get_config() -> ml_collections.ConfigDict:
    config = get_ve_config()
    training = config.training
    training.n_iters = 200000
    training.snapshot_sampling = False
    training.eps = 1e-5

    model = config.model
    model.name = "classifier"
    model.num_classes = 10
    model.nf = 160
    model.ch_mult = (1, 2, 4)
    model.num_res_blocks = 4
    model.dropout = 0.0
    model.embedding_type = "fourier"
    model.fourier_scale = 16
    config.optim.lr = 2e-4
    config.data.random_flip = True
    return config
