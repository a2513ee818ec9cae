"""A small MLP score model (continuous VP SDE) on the 2-D ``TOY_8GAUSSIANS`` mixture, ~40 s on CPU.

The paper's ``vp/cifar10_ddpmpp_continuous`` config with the data and model swapped: 8 Gaussians
(std 0.1) on a circle of radius 2, an MLP of three 128-wide layers, 3000 steps of batch 512. The
quality metric is the sliced Wasserstein distance to exact target samples (``evaluation.toy_metrics``),
reported next to its sampling-noise floor. ``scoresde train --config configs/toy_8gaussians.py
--workdir runs/toy8``.
"""

from __future__ import annotations

import ml_collections

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_ddpmpp_config


def get_config() -> ml_collections.ConfigDict:
    config = get_ddpmpp_config()

    # training
    training = config.training
    training.sde = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.batch_size = 512
    training.n_iters = 3000
    training.n_jitted_steps = 1  # > 1 runs lax.scan, slow on XLA:CPU
    training.log_freq = 250
    training.eval_freq = 500
    training.snapshot_freq = 1000
    training.snapshot_freq_for_preemption = 500
    training.snapshot_sampling = True
    training.snapshot_num_samples = 1024
    training.keep_checkpoints = 2
    training.grad_accum_steps = 1

    # sampling: Euler-Maruyama over the model's N steps
    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"
    sampling.n_steps_each = 1

    # evaluation
    config.eval.batch_size = 512
    config.eval.num_samples = 2000

    # data: exact Gaussian mixture in its natural units (no [0, 1] scaling)
    data = config.data
    data.dataset = "TOY_8GAUSSIANS"
    data.centered = True
    data.random_flip = False
    data.uniform_dequantization = False
    data.num_channels = 1

    # model: time-conditioned MLP (labels (N-1) t, positional embedding)
    model = config.model
    model.name = "mlp"
    model.hidden_sizes = (128, 128, 128)
    model.embedding_type = "positional"
    model.embedding_dim = 64
    model.nonlinearity = "swish"
    model.dropout = 0.0
    model.num_scales = 500
    model.beta_min = 0.1
    model.beta_max = 20.0
    model.ema_rate = 0.995

    # optimization
    optim = config.optim
    optim.lr = 2e-3
    optim.warmup = 100
    optim.grad_clip = 1.0

    config.seed = 42
    return config
