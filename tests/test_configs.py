"""The shipped paper configs: official names and keys, and every one builds a model (eval_shape)."""

from __future__ import annotations

import dataclasses

import pytest

from scoresde_jax.config import apply_override, create_model, list_configs, load_config, param_shapes
from scoresde_jax.config_files import REPO_ROOT
from scoresde_jax.models import count_params

PAPER_CONFIGS = [
    "configs/ve/cifar10_ncsnpp_continuous.py",
    "configs/ve/cifar10_ncsnpp_deep_continuous.py",
    "configs/ve/cifar10_ncsnpp.py",
    "configs/ve/cifar10_ddpm.py",
    "configs/ve/celeba_ncsnpp.py",
    "configs/ve/celebahq_256_ncsnpp_continuous.py",
    "configs/ve/celebahq_ncsnpp_continuous.py",
    "configs/ve/ffhq_256_ncsnpp_continuous.py",
    "configs/ve/ffhq_ncsnpp_continuous.py",
    "configs/ve/church_ncsnpp_continuous.py",
    "configs/ve/bedroom_ncsnpp_continuous.py",
    "configs/ve/ncsnv2/cifar10.py",
    "configs/ve/ncsnv2/celeba.py",
    "configs/ve/ncsnv2/bedroom.py",
    "configs/ve/ncsn/cifar10.py",
    "configs/ve/ncsn/cifar10_124.py",
    "configs/ve/ncsn/cifar10_1245.py",
    "configs/ve/ncsn/cifar10_5.py",
    "configs/ve/ncsn/celeba.py",
    "configs/ve/ncsn/celeba_124.py",
    "configs/ve/ncsn/celeba_1245.py",
    "configs/ve/ncsn/celeba_5.py",
    "configs/vp/cifar10_ddpmpp_continuous.py",
    "configs/vp/cifar10_ddpmpp_deep_continuous.py",
    "configs/vp/cifar10_ddpmpp.py",
    "configs/vp/cifar10_ncsnpp.py",
    "configs/vp/cifar10_ncsnpp_continuous.py",
    "configs/vp/ddpm/cifar10.py",
    "configs/vp/ddpm/cifar10_continuous.py",
    "configs/vp/ddpm/cifar10_unconditional.py",
    "configs/vp/ddpm/celebahq.py",
    "configs/vp/ddpm/church.py",
    "configs/vp/ddpm/bedroom.py",
    "configs/subvp/cifar10_ddpm_continuous.py",
    "configs/subvp/cifar10_ddpmpp_continuous.py",
    "configs/subvp/cifar10_ddpmpp_deep_continuous.py",
    "configs/subvp/cifar10_ncsnpp_continuous.py",
    "configs/subvp/cifar10_ncsnpp_deep_continuous.py",
]

REQUIRED = {
    "training": ["batch_size", "n_iters", "snapshot_freq", "log_freq", "eval_freq",
                 "snapshot_freq_for_preemption", "snapshot_sampling", "likelihood_weighting",
                 "continuous", "n_jitted_steps", "reduce_mean", "sde"],
    "sampling": ["n_steps_each", "noise_removal", "probability_flow", "snr", "method",
                 "predictor", "corrector"],
    "eval": ["begin_ckpt", "end_ckpt", "batch_size", "enable_sampling", "num_samples",
             "enable_loss", "enable_bpd", "bpd_dataset"],
    "data": ["dataset", "image_size", "random_flip", "centered", "uniform_dequantization",
             "num_channels"],
    "model": ["name", "sigma_min", "sigma_max", "num_scales", "beta_min", "beta_max", "dropout",
              "scale_by_sigma", "ema_rate", "normalization", "nonlinearity", "nf"],
    "optim": ["weight_decay", "optimizer", "lr", "beta1", "eps", "warmup", "grad_clip"],
}


def test_all_paper_configs_are_shipped():
    shipped = set(list_configs())
    missing = [c for c in PAPER_CONFIGS if c not in shipped]
    assert not missing, missing


@pytest.mark.parametrize("path", list_configs())
def test_config_has_official_sections_and_keys(path):
    config = load_config(path)
    assert isinstance(config.seed, int)
    for section, keys in REQUIRED.items():
        absent = [k for k in keys if k not in config[section]]
        assert not absent, f"{path}: config.{section} lacks {absent}"
    assert config.training.sde in ("vesde", "vpsde", "subvpsde")
    expected_sde = {"ve": "vesde", "vp": "vpsde", "subvp": "subvpsde"}[path.split("/")[1]]
    assert config.training.sde == expected_sde
    if config.model.name == "ncsnpp":
        assert config.model.embedding_type in ("fourier", "positional")
        # Fourier features take noise levels: only used with continuous VE training
        if config.model.embedding_type == "fourier":
            assert config.training.continuous and config.training.sde == "vesde"


def test_paper_hyperparameters():
    c = load_config("configs/ve/cifar10_ncsnpp_deep_continuous.py")
    assert (c.model.sigma_min, c.model.sigma_max, c.model.num_scales) == (0.01, 50, 1000)
    assert c.model.num_res_blocks == 8 and c.training.n_iters == 950001
    c = load_config("configs/vp/cifar10_ddpmpp_continuous.py")
    assert (c.model.beta_min, c.model.beta_max) == (0.1, 20.0) and c.data.centered
    assert c.model.embedding_type == "positional" and not c.model.fir
    c = load_config("configs/ve/ffhq_ncsnpp_continuous.py")
    assert c.data.image_size == 1024 and c.model.sigma_max == 1348 and c.model.nf == 16
    c = load_config("configs/ve/ncsnv2/cifar10.py")
    assert c.model.num_scales == 232 and c.sampling.corrector == "ald"


_SHAPES: dict = {}


@pytest.mark.parametrize("path", list_configs())
def test_every_config_builds_its_model(path):
    config = load_config(path)
    model = create_model(config)
    # Parameter shapes do not depend on these fields; share the eval_shape between configs.
    key = (dataclasses.replace(model, sigma_min=0.0, sigma_max=0.0, num_scales=0, centered=False,
                               scale_by_sigma=False),
           config.data.image_size, config.data.num_channels)
    if key not in _SHAPES:
        _SHAPES[key] = count_params(param_shapes(config))
    assert _SHAPES[key] > 1_000_000


def test_load_config_by_relative_and_short_path(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the loader must not depend on the working directory
    a = load_config(REPO_ROOT / "configs/vp/ddpm/cifar10.py")
    b = load_config("vp/ddpm/cifar10")
    assert a.to_dict() == b.to_dict()


def test_load_config_missing_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="does not exist.*get_config"):
        load_config("configs/ve/cifar10_ncsnpp_nonexistent.py")


def test_load_config_without_get_config(tmp_path):
    bad = tmp_path / "bad_config.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="get_config"):
        load_config(bad)


def test_overrides():
    c = load_config("configs/ve/cifar10_ncsnpp_continuous.py",
                    ["training.batch_size=8", "model.nf=64", "sampling.predictor=euler_maruyama"])
    assert c.training.batch_size == 8 and c.model.nf == 64
    assert c.sampling.predictor == "euler_maruyama"
    with pytest.raises(ValueError, match="no section"):
        apply_override(c, "nosuch.key=1")
