"""The config boundary (scoresde_jax.config): a config key is passed on only when the config sets
it, so the configured function's signature holds the default; bad values fail before any work."""

from __future__ import annotations

import inspect

import jax
import numpy as np
import pytest

from scoresde_jax import analytic, samplers
from scoresde_jax import config as C
from scoresde_jax.models import NCSNpp

DIGITS = "configs/digits_ddpmpp.py"


def test_sampler_options_pass_only_what_the_config_sets():
    cfg = C.load_config(DIGITS, ["sampling.method=ddim"])
    del cfg.sampling["predictor"], cfg.sampling["corrector"]
    method, options = C.sampler_options(cfg)
    assert method == "ddim"
    assert set(options) <= {"denoise"}  # num_steps / eta: ddim_sample's own defaults
    params = inspect.signature(samplers.ddim_sample).parameters
    assert params["num_steps"].default == 50 and params["eta"].default == 0.0
    cfg = C.load_config(DIGITS, ["sampling.method=ddim", "sampling.num_steps=7",
                                 "sampling.eta=0.5", "sampling.noise_removal=False"])
    assert C.sampler_options(cfg)[1] == {"denoise": False, "num_steps": 7, "eta": 0.5}
    method, options = C.sampler_options(C.load_config(DIGITS, ["sampling.n_steps_each=3"]))
    assert method == "pc" and options["n_steps"] == 3


def test_get_sampling_fn_equals_the_sampler_called_directly():
    cfg = C.load_config(DIGITS, ["sampling.method=dpm_solver_pp", "sampling.num_steps=6",
                                 "model.num_scales=50"])
    sde, eps = C.get_sde(cfg)
    target = analytic.gaussian(np.zeros(2), np.eye(2) * 0.25)
    score = analytic.exact_score_fn(target, sde)
    out = C.get_sampling_fn(cfg, sde, (16, 2), eps)(jax.random.key(0), score)
    ref = samplers.dpm_solver_pp_sample(score, sde, (16, 2), jax.random.key(0), num_steps=6,
                                        eps=eps, denoise=bool(cfg.sampling.noise_removal))
    np.testing.assert_array_equal(np.asarray(out.x), np.asarray(ref.x))
    assert int(out.nfe) == int(ref.nfe)


@pytest.mark.parametrize("key,value", [("predictor", "euler"), ("corrector", "langevn"),
                                       ("method", "ddpm")])
def test_unknown_sampler_names_fail_at_setup_before_training(key, value):
    cfg = C.load_config(DIGITS, [f"sampling.{key}={value}"])
    with pytest.raises(ValueError, match=f"config.sampling.{key}"):
        C.setup(cfg)


def test_create_model_names_a_missing_size_and_uses_module_defaults_otherwise():
    cfg = C.load_config("configs/ve/cifar10_ncsnpp_continuous.py")
    del cfg.model["nf"]
    with pytest.raises(ValueError, match=r"config\.model\.nf is required"):
        C.create_model(cfg)
    cfg = C.load_config("configs/ve/cifar10_ncsnpp_continuous.py")
    del cfg.model["fir_kernel"]
    assert C.create_model(cfg).fir_kernel == NCSNpp.fir_kernel
    with pytest.raises(ValueError, match="not a known model"):
        C.create_model(C.load_config(DIGITS, ["model.name=unet9"]))


def test_get_sde_reads_the_noise_scales():
    cfg = C.load_config("configs/ve/cifar10_ncsnpp_continuous.py", ["model.num_scales=10"])
    sde, eps = C.get_sde(cfg)
    assert (sde.sigma_min, sde.sigma_max, sde.N, eps) == (0.01, 50.0, 10, 1e-5)
    with pytest.raises(ValueError, match="config.training.sde"):
        C.get_sde(C.load_config(DIGITS, ["training.sde=edm"]))


def test_loop_options_check_frequencies_against_n_jitted_steps():
    cfg = C.load_config(DIGITS, ["training.n_jitted_steps=4", "training.log_freq=6"])
    with pytest.raises(ValueError, match="multiple of training.n_jitted_steps=4"):
        C.loop_options(cfg)
    opts = C.loop_options(C.load_config(DIGITS))
    assert opts.n_iters == C.load_config(DIGITS).training.n_iters


@pytest.mark.parametrize("item,want", [
    ("model.remat=false", False), ("model.remat=True", True),
    ("sampling.lower_order_final=0", False), ("sampling.num_steps=12", 12),
    ("sampling.eta=1", 1.0), ("sampling.unipc_variant=bh1", "bh1")])
def test_optional_keys_are_parsed_by_their_type(item, want):
    config = C.load_config("configs/digits_ddpmpp.py", [item])
    section, key = item.split("=")[0].split(".")
    value = config[section][key]
    assert value == want and type(value) is type(want)


def test_optional_int_key_rejects_a_float():
    with pytest.raises(ValueError, match="integer"):
        C.load_config("configs/digits_ddpmpp.py", ["sampling.num_steps=8.0"])


def test_solver_options_reach_the_sampler():
    config = C.load_config("configs/digits_ddpmpp.py",
                           ["sampling.method=unipc", "sampling.lower_order_final=false",
                            "sampling.unipc_variant=bh1", "sampling.order=3"])
    options = C.sampler_options(config)[1]
    assert {k: options[k] for k in ("lower_order_final", "variant", "order")} == {
        "lower_order_final": False, "variant": "bh1", "order": 3}
