"""EDM's training and sampling recipe (Karras et al. 2022, "Elucidating the design space", Table 1 and
appendix F) applied to a config with the official score_sde layout: the ``sigma(t) = t`` SDE on
``[0.002, 80]``, EDM's preconditioning (``sigma_data = 0.5``, data in ``[-1, 1]``), EDM's loss
(``log sigma ~ N(-1.2, 1.2^2)``, weight ``(sigma^2 + sigma_data^2) / (sigma sigma_data)^2``) and Heun's
method with 18 grid points (35 score evaluations) on EDM's ``rho = 7`` grid.
"""

from __future__ import annotations

import ml_collections


def apply_edm_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Switch ``config`` (any network) to the EDM recipe, in place; returns it."""
    training = config.training
    training.sde = "edmsde"
    training.continuous = True
    training.likelihood_weighting = False
    training.loss = "edm"
    training.P_mean = -1.2
    training.P_std = 1.2

    model = config.model
    model.sigma_min = 0.002
    model.sigma_max = 80  # an int in the default configs (get_sde reads it as a float)
    model.sigma_data = 0.5
    model.scale_by_sigma = False  # the preconditioning scales the output
    # This library's networks embed c_noise = log(sigma) / 4 with a positional embedding (the Fourier
    # embedding of its NCSN++ takes log(label), i.e. expects sigma itself); EDM's own networks
    # (use_edm_song_unet) embed c_noise as EDM does.
    model.embedding_type = "positional"

    sampling = config.sampling
    sampling.method = "heun"
    sampling.num_steps = 18  # 17 Heun steps + the final Euler step to sigma = 0: 35 evaluations
    sampling.grid = "edm"
    sampling.rho = 7.0

    config.data.centered = True  # sigma_data = 0.5 is the std of data in [-1, 1]
    return config


# EDM's two CIFAR-10 architectures (its train.py --arch): the SongUNet arguments that differ
SONG_UNET_ARCHS = {
    "ddpmpp": dict(embedding_type="positional", encoder_type="standard", decoder_type="standard",
                   channel_mult_noise=1, resample_filter=(1, 1)),
    "ncsnpp": dict(embedding_type="fourier", encoder_type="residual", decoder_type="standard",
                   channel_mult_noise=2, resample_filter=(1, 3, 3, 1)),
}


def use_edm_song_unet(config: ml_collections.ConfigDict, arch: str) -> ml_collections.ConfigDict:
    """Switch an EDM-recipe ``config`` (:func:`apply_edm_recipe`) to EDM's own network, in place:
    :class:`scoresde_jax.models.song_unet.EDMSongUNet` (``model.name = 'edm_song_unet'``, the
    network that ``scoresde convert --from edm`` loads) with EDM's preconditioning, in EDM's
    CIFAR-10 configuration of ``arch`` ('ddpmpp' | 'ncsnpp'): 128 channels, multipliers (2, 2, 2),
    4 blocks per resolution, attention at 16x16, dropout 0.13; for NCSN++ a Fourier embedding of
    ``c_noise``, the residual input pyramid and the [1, 3, 3, 1] resample filter."""
    if arch not in SONG_UNET_ARCHS:
        raise ValueError(f"arch={arch!r}: one of {sorted(SONG_UNET_ARCHS)}")
    model = config.model
    model.name = "edm_song_unet"
    model.precond = "edm"
    model.sde = "edm"  # the network computes F(c_in x, c_noise); the library applies c_skip, c_out
    model.img_resolution = config.data.image_size
    model.img_channels = config.data.num_channels
    model.label_dim = 0
    model.augment_dim = 0  # EDM's augmentation pipeline is not part of this library
    model.model_channels = 128
    model.channel_mult = (2, 2, 2)
    model.channel_mult_emb = 4
    model.num_blocks = 4
    model.attn_resolutions = (16,)
    model.dropout = 0.13
    model.label_dropout = 0.0
    model.update(SONG_UNET_ARCHS[arch])
    return config
