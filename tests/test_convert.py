"""Official score_sde checkpoints -> this library: round trip through the exact official layout."""

from __future__ import annotations

from pathlib import Path

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from scoresde_jax.config import create_model, param_shapes
from scoresde_jax.pretrained import score_sde
from scoresde_jax.pretrained.score_sde import CheckpointMismatchError, load_checkpoint


def tiny_config(name: str = "ncsnpp") -> ml_collections.ConfigDict:
    """A small config with the official keys (CIFAR-10 layout at 8x8)."""
    c = ml_collections.ConfigDict()
    c.training = ml_collections.ConfigDict({"continuous": True})
    c.data = ml_collections.ConfigDict({"image_size": 8, "num_channels": 3, "centered": False})
    m = c.model = ml_collections.ConfigDict()
    m.name = name
    m.nf = 16
    m.ch_mult = (1, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (4,)
    m.dropout = 0.1
    m.resamp_with_conv = True
    m.conditional = True
    m.sigma_min, m.sigma_max, m.num_scales = 0.01, 50.0, 10
    m.nonlinearity = "swish"
    if name == "ncsnpp":
        m.scale_by_sigma = True
        m.fir = True
        m.fir_kernel = [1, 3, 3, 1]
        m.skip_rescale = True
        m.resblock_type = "biggan"
        m.progressive = "output_skip"
        m.progressive_input = "residual"
        m.progressive_combine = "sum"
        m.embedding_type = "fourier"
        m.fourier_scale = 16
        m.init_scale = 0.0
    elif name == "ddpm":
        m.scale_by_sigma = False
        m.num_groups = 4
    else:  # ncsnv2_64
        m.nf = 8
        m.scale_by_sigma = True
        m.normalization = "InstanceNorm++"
        m.nonlinearity = "elu"
        m.interpolation = "bilinear"
    return c


def random_params(config, seed):
    rng = np.random.default_rng(seed)
    shapes = param_shapes(config)
    return jax.tree.map(lambda s: rng.normal(scale=0.2, size=s.shape).astype(np.float32), shapes)


def official_state(params, params_ema, step=7):
    """The training state exactly as score_sde's ``State`` serializes (flax.optim Adam)."""
    moments = jax.tree.map(lambda p: {"grad_ema": 0.1 * p, "grad_sq_ema": p * p}, params)
    return {
        "step": np.asarray(step),
        "optimizer": {"target": params,
                      "state": {"step": np.asarray(step), "param_states": moments}},
        "lr": np.asarray(2e-4, np.float32),
        "model_state": {},
        "ema_rate": np.asarray(0.999, np.float32),
        "params_ema": params_ema,
        "rng": np.asarray([0, 42], np.uint32),
    }


def write_checkpoint(directory: Path, state, step=7) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"checkpoint_{step}"
    path.write_bytes(flax.serialization.msgpack_serialize(state))
    return path


def apply(config, params, x):
    model = create_model(config)
    labels = jnp.array([0.3, 4.0]) if model.__class__.__name__ == "NCSNpp" else jnp.array([1, 8])
    return model.apply({"params": params}, x, labels, train=False)


X = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))


@pytest.mark.parametrize("name", ["ncsnpp", "ddpm", "ncsnv2_64"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    config = tiny_config(name)
    raw, ema = random_params(config, 0), random_params(config, 1)
    path = write_checkpoint(tmp_path / "checkpoints", official_state(raw, ema))
    ckpt = load_checkpoint(path, param_shapes(config))
    loaded_ema, loaded_raw = ckpt.ema_params, ckpt.params
    assert ckpt.weights() is loaded_ema and ckpt.weights(ema=False) is loaded_raw
    assert jax.tree.structure(loaded_ema) == jax.tree.structure(jax.tree.map(jnp.asarray, ema))
    np.testing.assert_array_equal(apply(config, loaded_ema, X), apply(config, ema, X))
    np.testing.assert_array_equal(apply(config, loaded_raw, X), apply(config, raw, X))
    assert not np.array_equal(apply(config, loaded_raw, X), apply(config, loaded_ema, X))
    again = load_checkpoint(path, param_shapes(config, remat=True)).ema_params
    assert jax.tree.structure(again) == jax.tree.structure(loaded_ema)


def test_directory_picks_newest_and_step(tmp_path):
    config = tiny_config("ddpm")
    a, b = random_params(config, 0), random_params(config, 1)
    write_checkpoint(tmp_path, official_state(a, a, step=3), step=3)
    write_checkpoint(tmp_path, official_state(b, b, step=12), step=12)
    newest = load_checkpoint(tmp_path, param_shapes(config)).weights()
    np.testing.assert_array_equal(newest["Conv_0"]["kernel"], b["Conv_0"]["kernel"])
    third = load_checkpoint(tmp_path, param_shapes(config), step=3).weights()
    np.testing.assert_array_equal(third["Conv_0"]["kernel"], a["Conv_0"]["kernel"])
    with pytest.raises(FileNotFoundError, match="available steps"):
        load_checkpoint(tmp_path, param_shapes(config), step=5)
    state = load_checkpoint(tmp_path, param_shapes(config))
    assert state.step == 12 and state.ema_rate == pytest.approx(0.999)


def test_checkpoint_of_another_architecture(tmp_path):
    ddpm = random_params(tiny_config("ddpm"), 0)
    path = write_checkpoint(tmp_path, official_state(ddpm, ddpm))
    with pytest.raises(CheckpointMismatchError, match="another architecture") as e:
        load_checkpoint(path, param_shapes(tiny_config("ncsnpp")))
    assert "ResnetBlockDDPM" in str(e.value) and "ResnetBlockBigGANpp" in str(e.value)


def test_missing_unexpected_and_misshaped_entries_are_named(tmp_path):
    config = tiny_config("ncsnpp")
    p = random_params(config, 0)
    del p["AttnBlockpp_0"]["NIN_3"]
    p["Extra_0"] = {"kernel": np.zeros((2, 2), np.float32)}
    p["Conv_0"]["kernel"] = np.zeros((3, 3, 3, 17), np.float32)
    path = write_checkpoint(tmp_path, official_state(p, p))
    with pytest.raises(CheckpointMismatchError) as e:
        load_checkpoint(path, param_shapes(config))
    msg = str(e.value)
    assert "AttnBlockpp_0/NIN_3/W" in msg and "AttnBlockpp_0/NIN_3/b" in msg
    assert "Extra_0/kernel" in msg
    assert "Conv_0/kernel: checkpoint (3, 3, 3, 17) vs model (3, 3, 3, 16)" in msg


def test_other_config_sizes_are_reported(tmp_path):
    config = tiny_config("ncsnpp")
    p = random_params(config, 0)
    path = write_checkpoint(tmp_path, official_state(p, p))
    config.model.nf = 32
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_checkpoint(path, param_shapes(config))


def test_bad_files(tmp_path):
    config = tiny_config("ddpm")
    shapes = param_shapes(config)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope" / "checkpoint_1", shapes)
    with pytest.raises(FileNotFoundError, match="no checkpoint_"):
        load_checkpoint(tmp_path, shapes)
    garbage = tmp_path / "checkpoint_1"
    garbage.write_bytes(b"\x00not msgpack at all" * 3)
    with pytest.raises(ValueError):
        load_checkpoint(garbage, shapes)
    other = tmp_path / "checkpoint_2"
    other.write_bytes(flax.serialization.msgpack_serialize({"params": {"a": np.zeros(2)}}))
    with pytest.raises(ValueError, match="not an official score_sde training state"):
        load_checkpoint(other, shapes)
    p = random_params(config, 0)
    state = official_state(p, p)
    del state["params_ema"]
    no_ema = write_checkpoint(tmp_path / "noema", state)
    with pytest.raises(ValueError, match="ema=False"):
        load_checkpoint(no_ema, shapes).weights()
    assert load_checkpoint(no_ema, shapes).ema_params is None
    assert load_checkpoint(no_ema, shapes).weights(ema=False)["Conv_0"]["kernel"].shape


def test_one_read_gives_step_raw_and_ema_params(tmp_path):
    """What the ``convert`` job needs, from one read: the step, the raw and the EMA weights, the
    description of the model in error messages."""
    config = tiny_config("ddpm")
    raw, ema = random_params(config, 0), random_params(config, 1)
    ckpt_path = write_checkpoint(tmp_path / "ck", official_state(raw, ema, step=9), step=9)
    ckpt = load_checkpoint(ckpt_path, param_shapes(config))
    assert ckpt.step == 9 and ckpt.path == ckpt_path
    np.testing.assert_array_equal(ckpt.params["Conv_0"]["kernel"], raw["Conv_0"]["kernel"])
    np.testing.assert_array_equal(ckpt.ema_params["Conv_0"]["kernel"], ema["Conv_0"]["kernel"])
    model = create_model(config)
    desc = score_sde.describe_model(model, (8, 8, 3))
    assert desc.startswith("DDPM(nf=16, ch_mult=(1, 2)") and desc.endswith("on (8, 8, 3) inputs")
    config.model.nf = 32
    with pytest.raises(CheckpointMismatchError, match="does not match DDPM"):
        load_checkpoint(ckpt_path, param_shapes(config), model_desc=desc)


# --- EDM and diffusers sources: the workdir samples like a trained one ------------------------------
def _convert_and_sample(tmp_path, p, source, fmt, **sample_args):
    import scoresde_jax.config as C
    from scoresde_jax.jobs import convert as convert_job
    from scoresde_jax.jobs import sample as sample_job
    from scoresde_jax.training.workdir import read_config

    wd = str(tmp_path / f"wd_{fmt}")
    s = C.setup(p.config, model=p.model)
    out = convert_job.convert(s, C.convert_options(p.config, s, source=str(source),
                                                   source_format=fmt, pretrained=p), wd)
    assert out["step"] == 0 and out["format"] == fmt
    assert read_config(wd)["model"]["name"] == p.config.model.name
    with pytest.raises(ValueError, match="already has checkpoints"):
        convert_job.convert(s, C.convert_options(p.config, s, source=str(source),
                                                 source_format=fmt, pretrained=p), wd)
    saved = C.config_for_workdir(None, wd)
    s2 = C.setup(saved, model=p.model)
    res = sample_job.sample(s2, C.sample_options(saved, s2, num_samples=2, progress=False,
                                                 **sample_args), wd)
    assert res.samples.shape == (2, 8, 8, 3) and np.isfinite(res.samples).all()
    return res


@pytest.mark.slow
def test_edm_pickle_converts_into_a_workdir_that_samples(tmp_path):
    from scoresde_jax import pretrained
    from tests.pretrained_fixtures import write_edm
    src = write_edm(tmp_path / "net.pkl", "edm_ve_ncsnpp_cond")
    p = pretrained.load(src)
    assert p.format == "edm"
    _convert_and_sample(tmp_path, p, src, "edm", method="heun", nfe=5, classes="1")


@pytest.mark.slow
def test_edm_preconditioned_pickle_converts_onto_the_edm_sde_and_samples(tmp_path):
    from scoresde_jax import pretrained
    from tests.pretrained_fixtures import write_edm
    src = write_edm(tmp_path / "net.pkl", "edm_edm_skip")
    p = pretrained.load(src)
    assert p.sde.kind == "edm" and p.config.training.sde == "edmsde"
    res = _convert_and_sample(tmp_path, p, src, "edm")  # the config's sampler: EDM's Heun
    assert res.summary["method"] == "heun" and int(np.max(res.summary["nfe"])) == 35


@pytest.mark.slow
def test_diffusers_folder_converts_into_a_workdir_that_samples(tmp_path):
    from scoresde_jax import pretrained
    from tests.pretrained_fixtures import write_diffusers
    src = write_diffusers(tmp_path / "ddpm", "diffusers_ddpm")
    p = pretrained.load(src)
    assert p.format == "diffusers" and not p.continuous
    _convert_and_sample(tmp_path, p, src, "diffusers", method="ddim", nfe=4)


def test_official_checkpoint_loads_as_pretrained(tmp_path):
    from scoresde_jax import pretrained
    config = tiny_config("ddpm")
    config.training.update(sde="vpsde", continuous=False, batch_size=4, n_iters=1,
                           snapshot_freq=1, log_freq=1, eval_freq=0,
                           snapshot_freq_for_preemption=1, n_jitted_steps=1)
    config.model.update(beta_min=0.1, beta_max=20.0, ema_rate=0.999, num_scales=1000)
    config.data.update(dataset="CIFAR10")
    config.optim = ml_collections.ConfigDict(dict(optimizer="Adam", lr=1e-4, warmup=0,
                                                  grad_clip=1.0, beta1=0.9, eps=1e-8,
                                                  weight_decay=0.0))
    raw, ema = random_params(config, 0), random_params(config, 1)
    path = write_checkpoint(tmp_path / "ck", official_state(raw, ema, step=5), step=5)
    with pytest.raises(ValueError, match="needs the config"):
        pretrained.load(path, format="score_sde")
    p = pretrained.load(path, config=config)
    assert p.format == "score_sde" and p.info["step"] == 5 and not p.continuous
    x = X * 2 - 1
    t = jnp.array([0.2, 0.6])
    labels = t * (p.sde.N - 1)
    out = create_model(config).apply({"params": ema}, x, labels, train=False)
    idx = (t * (p.sde.N - 1)).astype(jnp.int32)
    want = -out / jnp.asarray(p.sde.sqrt_1m_alphas_cumprod)[idx][:, None, None, None]
    np.testing.assert_allclose(p.score_fn(x, t), want, rtol=1e-5, atol=1e-5)
