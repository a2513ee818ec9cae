"""A small DDPM++ (continuous VP SDE) on your own images: a folder or a .zip of PNG / JPEG / WebP
files at 32x32 (``--config.data.image_size=64`` for 64x64).

The paper's ``vp/cifar10_ddpmpp_continuous`` shrunk to a single-GPU size (nf 64, three
resolutions, two residual blocks each, attention at 16x16, 7.0M parameters), batch 64.
``data.path`` must be given::

    scoresde train --config configs/folder_ddpmpp.py --config.data.path=/data/faces --workdir runs/faces

Images of another size are center-cropped and resized (EDM's ``--transform=center-crop``, Lanczos);
``data.num_channels = 1`` trains on grayscale. Class subfolders (or an EDM ``dataset.json``) give
labels: ``--config.model.num_classes=K --config.model.class_dropout=0.1`` trains a
class-conditional model with label dropout for classifier-free guidance; the class names go to the workdir's ``config.json``
(``data.class_names``). Unreadable files stop the run naming them, or are left out with
``--config.data.skip_bad_files=true``. ``data.eval_path`` names a held-out folder for the eval
loss (default: the training images).
"""

from __future__ import annotations

import ml_collections

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_ddpmpp_config


def get_config() -> ml_collections.ConfigDict:
    config = get_ddpmpp_config()

    training = config.training
    training.batch_size = 64
    training.n_iters = 200001
    training.snapshot_freq = 10000
    training.snapshot_freq_for_preemption = 2000
    training.eval_freq = 500
    training.log_freq = 100
    training.snapshot_num_samples = 64
    training.keep_checkpoints = 5

    config.eval.batch_size = 256
    config.eval.num_samples = 10000

    data = config.data
    data.dataset = "folder"
    data.path = ""  # set it: --config.data.path=DIR_OR_ZIP
    data.eval_path = ""  # a held-out folder for the eval loss ('' = data.path)
    data.skip_bad_files = False
    data.image_size = 32
    data.num_channels = 3
    data.centered = True
    data.random_flip = True
    data.uniform_dequantization = False

    model = config.model
    model.nf = 64
    model.ch_mult = (1, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.dropout = 0.1
    model.ema_rate = 0.9995
    model.num_classes = 0  # K class folders: --config.model.num_classes=K
    model.class_dropout = 0.0  # with classes: 0.1 trains the null class for guidance

    config.optim.warmup = 2000
    return config
