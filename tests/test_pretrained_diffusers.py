"""diffusers pipeline folders: the UNet2DModel outputs equal diffusers' own (references written by
tests/fixtures/pretrained/make_reference.py), from safetensors, torch ``.bin`` and legacy names."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.pretrained import diffusers
from scoresde_jax.pretrained.common import WeightMismatchError
from scoresde_jax.pretrained.tensor_files import read_safetensors
from tests.pretrained_fixtures import reference, write_diffusers


def _check(p, case):
    r = reference(case)
    out = p.model.apply({"params": p.params}, jnp.asarray(r["x"].transpose(0, 2, 3, 1)),
                        jnp.asarray(r["t"]))
    err = np.abs(np.asarray(out).transpose(0, 3, 1, 2) - r["out"]).max()
    assert err <= 1e-3 * r["out"].std(), (case, err, r["out"].std())


def test_ddpm_pipeline_from_bin_with_legacy_attention_names(tmp_path):
    root = write_diffusers(tmp_path / "ddpm", "diffusers_ddpm", fmt="bin", legacy_names=True)
    p = diffusers.load(root)
    _check(p, "diffusers_ddpm")
    assert p.sde.kind == "vp" and not p.continuous and p.sde.N == 1000
    np.testing.assert_allclose(p.sde.discrete_betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-6)
    assert p.config.data.centered and p.format == "diffusers"


def test_score_sde_ve_pipeline_from_safetensors(tmp_path):
    root = write_diffusers(tmp_path / "ve", "diffusers_ncsnpp", legacy_names=True)
    p = diffusers.load(root)
    _check(p, "diffusers_ncsnpp")
    assert p.sde.kind == "ve" and p.continuous and (p.sde.sigma_min, p.sde.sigma_max) == (
        0.01, 50.0)
    assert not p.config.data.centered
    assert p.config.model.attention_head_dim is None


def test_safetensors_round_trip_and_mismatch_names(tmp_path):
    root = write_diffusers(tmp_path / "d", "diffusers_ddpm")
    f = root / "unet" / "diffusion_pytorch_model.safetensors"
    w = read_safetensors(f)
    assert w["conv_in.weight"].shape == (16, 3, 3, 3) and w["conv_in.weight"].dtype == np.float32
    from scoresde_jax.pretrained.tensor_files import write_safetensors
    del w["conv_out.bias"]
    w["extra.weight"] = np.zeros(2, np.float32)
    write_safetensors(f, w)
    with pytest.raises(WeightMismatchError, match="conv_out/bias") as e:
        diffusers.load(root)
    assert "extra/weight" in str(e.value)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        diffusers.load(tmp_path / "nothing")
