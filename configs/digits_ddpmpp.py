"""A small DDPM++ (continuous VP SDE) on the embedded 8x8 sklearn digits; trains on a laptop CPU.

Official score_sde layout: the CIFAR-10 defaults overridden for a tiny model, a short run and
frequent logs. ``scoresde train --config configs/digits_ddpmpp.py --workdir runs/digits`` (or
``python -m experiments.main --config configs/digits_ddpmpp.py --workdir runs/digits``).
"""

from __future__ import annotations

import ml_collections

from configs.default_cifar10_configs import get_default_configs


def get_config() -> ml_collections.ConfigDict:
    config = get_default_configs()

    # training: ~minutes on 2 CPU cores
    training = config.training
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.likelihood_weighting = False
    training.batch_size = 64
    training.n_iters = 1500  # FID ~2.8 vs held-out digits (real digits ~2, noise ~90)
    training.n_jitted_steps = 1  # >1 uses lax.scan: ~30x slower on XLA:CPU, use 5 on GPU/TPU
    training.log_freq = 100
    training.eval_freq = 250
    training.snapshot_freq = 500
    training.snapshot_freq_for_preemption = 250
    training.snapshot_sampling = True
    training.snapshot_num_samples = 64
    training.keep_checkpoints = 3
    training.grad_accum_steps = 1

    # sampling: Euler-Maruyama predictor over the model's N steps
    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.n_steps_each = 1
    sampling.noise_removal = True
    sampling.probability_flow = False
    sampling.snr = 0.16

    # evaluation
    evaluate = config.eval
    evaluate.batch_size = 64
    evaluate.num_samples = 256

    # data: sklearn's 8x8 digits at their native size, one channel, in [-1, 1]
    data = config.data
    data.dataset = "DIGITS"
    data.image_size = 8
    data.num_channels = 1
    data.centered = True
    data.random_flip = False
    data.uniform_dequantization = False

    # model: DDPM++ (the NCSN++ U-Net with DDPM++ settings), small
    model = config.model
    model.name = "ncsnpp"
    model.num_scales = 250
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.scale_by_sigma = False
    model.ema_rate = 0.995  # a short run: 0.999 would still weigh the first steps heavily
    model.dropout = 0.0
    model.normalization = "GroupNorm"
    model.nonlinearity = "swish"
    model.nf = 32
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 1
    model.attn_resolutions = (4,)
    model.resamp_with_conv = True
    model.conditional = True
    model.fir = False
    model.fir_kernel = [1, 3, 3, 1]
    model.skip_rescale = True
    model.resblock_type = "biggan"
    model.progressive = "none"
    model.progressive_input = "none"
    model.progressive_combine = "sum"
    model.attention_type = "ddpm"
    model.init_scale = 0.0
    model.fourier_scale = 16
    model.conv_size = 3
    model.embedding_type = "positional"

    # optimization: the paper's chain with a shorter warmup and a larger step for a short run
    optim = config.optim
    optim.lr = 2e-3
    optim.warmup = 200
    optim.grad_clip = 1.0

    config.seed = 42
    return config
