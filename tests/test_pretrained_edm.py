"""EDM network pickles: outputs equal EDM's own code's (references written by
tests/fixtures/pretrained/make_reference.py), and nothing from the file is executed."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import guidance, samplers
from scoresde_jax.pretrained import edm
from scoresde_jax.pretrained.safe_pickle import UnsafePickleError, safe_load
from scoresde_jax.sde import EDMSDE
from tests.pretrained_fixtures import Global, Reduce, dumps, reference, write_edm


def _check_against_reference(tmp_path, case):
    p = edm.load(write_edm(tmp_path / f"{case}.pkl", case))
    r = reference(case)
    y = jnp.asarray(r["y"]) if r["y"].size else None
    out = np.asarray(p.denoise(jnp.asarray(r["x"].transpose(0, 2, 3, 1)), r["sigma"], y))
    err = np.abs(out.transpose(0, 3, 1, 2) - r["out"]).max()
    assert err <= 1e-3 * r["out"].std(), (case, err, r["out"].std())
    return p, r


def test_vp_ddpmpp_matches_edm_and_is_the_vp_sde(tmp_path):
    p, _ = _check_against_reference(tmp_path, "edm_vp_ddpmpp")
    assert p.sde.kind == "vp" and (p.sde.beta_min, p.sde.beta_max, p.sde.N) == (0.1, 20.0, 1000)
    assert p.num_classes == 0 and p.config.model.name == "edm_song_unet"
    assert p.config.data.centered and p.config.training.sde == "vpsde"


def test_ve_ncsnpp_conditional_matches_edm(tmp_path):
    p, _ = _check_against_reference(tmp_path, "edm_ve_ncsnpp_cond")
    assert p.sde.kind == "ve" and (p.sde.sigma_min, p.sde.sigma_max) == (0.02, 100.0)
    assert p.num_classes == 3


@pytest.mark.slow
def test_vp_score_is_the_denoiser_on_the_vp_sde(tmp_path):
    p, r = _check_against_reference(tmp_path, "edm_vp_ddpmpp")
    # score(x, t) = (D(x/a; s/a) - x/a) / (a (s/a)^2) on the VP SDE
    x = jnp.asarray(r["x"].transpose(0, 2, 3, 1))[:2]
    t = jnp.array([0.3, 0.7])
    a, s = p.sde.mean_coeff(t), p.sde.marginal_std(t)
    sig = s / a
    d = p.denoise(x / a[:, None, None, None], sig)
    want = (d - x / a[:, None, None, None]) / (a * sig ** 2)[:, None, None, None]
    np.testing.assert_allclose(p.score_fn(x, t), want, rtol=2e-3, atol=2e-3 * float(
        jnp.abs(want).max()))


@pytest.mark.slow
def test_ve_conditional_score_guidance_and_sampling(tmp_path):
    p, r = _check_against_reference(tmp_path, "edm_ve_ncsnpp_cond")
    x = jnp.asarray(r["x"].transpose(0, 2, 3, 1))[:2]
    sigma = jnp.array([0.5, 3.0])
    t = jnp.log(sigma / 0.02) / np.log(100 / 0.02)
    y = jnp.array([2, 3])  # 3 = the null class: EDM's class_labels=None
    d = p.denoise(x, sigma, jax.nn.one_hot(y, 3))
    np.testing.assert_allclose(p.score_fn(x, t, y), (d - x) / (sigma ** 2)[:, None, None, None],
                               rtol=1e-3, atol=1e-4)
    score = guidance.classifier_free_guidance(p.score_fn, 1, 1.5, null=p.num_classes)
    res = samplers.sample(score, p.sde, (2, 8, 8, 3), jax.random.key(0), method="heun", nfe=7)
    assert res.x.shape == (2, 8, 8, 3) and bool(jnp.all(jnp.isfinite(res.x)))


@pytest.mark.slow
@pytest.mark.parametrize("case", ["edm_edm_ddpmpp_cond", "edm_edm_skip"])
def test_edm_preconditioner_is_the_edm_sde(tmp_path, case):
    p, r = _check_against_reference(tmp_path, case)
    assert isinstance(p.sde, EDMSDE) and p.config.training.sde == "edmsde"
    assert (p.sde.sigma_min, p.sde.sigma_max, p.sde.sigma_data) == (0.002, 80.0, 0.5)
    assert p.sampling_eps == 0.002 and p.config.model.sde == "edm"
    assert dict(p.config.sampling) == dict(method="heun", num_steps=18, grid="edm", rho=7.0)
    # score(x, t) = (D(x; sigma) - x) / sigma^2 at sigma = t
    x = jnp.asarray(r["x"].transpose(0, 2, 3, 1))[:2]
    t = jnp.array([0.05, 7.0])
    y = jnp.array([1, 3]) if p.num_classes else None  # 3 = the null class
    d = p.denoise(x, t, None if y is None else jax.nn.one_hot(y, 3))
    want = (d - x) / (t ** 2)[:, None, None, None]
    got = p.score_fn(x, t) if y is None else p.score_fn(x, t, y)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(jnp.abs(want).max()))
    # EDM's deterministic sampler (Heun, 18 grid points = 35 evaluations) on the SDE's grid
    res = samplers.sample(p.score_fn, p.sde, (2, 8, 8, 3), jax.random.key(0), method="heun",
                          num_steps=18)
    assert int(res.nfe) == 35 and bool(jnp.all(jnp.isfinite(res.x)))


def test_edm_sampling_range_is_clamped_as_edm_generate_does():
    sde, name, params, eps = edm.sde_of(dict(precond="edm"))
    assert isinstance(sde, EDMSDE) and name == "edmsde" and eps == 0.002
    assert (sde.sigma_min, sde.sigma_max, sde.sigma_data) == (0.002, 80.0, 0.5)
    sde = edm.sde_of(dict(precond="edm", sigma_min=0.01, sigma_max=float("inf"),
                          sigma_data=1.0))[0]
    assert (sde.sigma_min, sde.sigma_max, sde.sigma_data) == (0.01, 80.0, 1.0)
    with pytest.raises(ValueError, match="sampling range"):
        edm.sde_of(dict(precond="edm", sigma_min=100.0))
    assert edm.sde_of(dict(precond="ve"))[1] == "vesde"


def test_embedded_code_is_never_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    path = write_edm(tmp_path / "evil_src.pkl", "edm_vp_ddpmpp", module_src=src)
    info = edm.read_network(path)
    assert info.class_name == "VPPrecond" and not marker.exists()
    # A global that would run code is refused in one line, before anything runs.
    evil = dumps({"ema": Reduce(Global("os", "system"), (f"touch {marker}",))})
    (tmp_path / "evil.pkl").write_bytes(evil)
    with pytest.raises(UnsafePickleError, match=r"refusing to load the global os\.system") as e:
        edm.load(tmp_path / "evil.pkl")
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.raises(UnsafePickleError, match="builtins.exec"):
        safe_load(dumps(Reduce(Global("builtins", "exec"), ("1",))))


@pytest.mark.parametrize("core", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy_scalars_under_both_module_names(core):
    dtype = Reduce(Global("numpy", "dtype"), ("f8", False, True),
                   (3, "<", None, None, None, -1, -1, 0))
    value = safe_load(dumps(Reduce(Global(core, "scalar"), (dtype, np.float64(0.25).tobytes()))))
    assert value == 0.25 and isinstance(value, np.float64)
    arr = safe_load(pickle.dumps(np.arange(6.0).reshape(2, 3), protocol=2))
    np.testing.assert_array_equal(arr, np.arange(6.0).reshape(2, 3))


def test_unsupported_networks_are_named(tmp_path):
    path = write_edm(tmp_path / "net.pkl", "edm_vp_ddpmpp")
    net = edm.read_network(path)
    net.state["_init_kwargs"]["model_type"] = "DhariwalUNet"
    with pytest.raises(ValueError, match="DhariwalUNet"):
        edm.network_kwargs(net)
    (tmp_path / "x.pkl").write_bytes(dumps({"net": 1}))
    with pytest.raises(ValueError, match="with key 'ema'"):
        edm.load(tmp_path / "x.pkl")


def test_public_writer_round_trips_a_flax_network(tmp_path):
    """scoresde_jax.pretrained.fixtures writes the pickle of a flax EDMSongUNet's parameters
    that the loader maps back onto the same tree (what notebook 02 does)."""
    from scoresde_jax.models.song_unet import EDMSongUNet
    from scoresde_jax.pretrained import fixtures
    kw = dict(img_resolution=8, img_channels=3, model_channels=8, channel_mult=(1, 2),
              num_blocks=1, attn_resolutions=(4,), dropout=0.0, resample_filter=(1, 3, 3, 1),
              encoder_type="skip", embedding_type="fourier", channel_mult_noise=2)
    net = EDMSongUNet(precond="edm", sde="edm", **kw)
    # jitted: op by op, the network's hundreds of small ops each compile a program of their own
    params = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1,)))["params"]
    sd = fixtures.edm_state_dict(params, kw["resample_filter"])
    assert sd["model.enc.8x8_conv.weight"].shape == (8, 3, 3, 3)  # OIHW
    assert "model.enc.4x4_down.conv0.resample_filter" in sd
    path = fixtures.write_edm_pickle(tmp_path / "net.pkl", "EDMPrecond",
                                     dict(kw, model_type="SongUNet", label_dim=0), sd)
    p = edm.load(path)
    assert isinstance(p.sde, EDMSDE) and p.info["class_name"] == "EDMPrecond"
    same = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), params, p.params)
    assert all(jax.tree.leaves(same))
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    sigma = jnp.array([0.1, 5.0])
    want = jax.jit(lambda v, x, s: net.apply(v, x, s, method="denoise"))({"params": params}, x, sigma)
    np.testing.assert_allclose(jax.jit(p.denoise)(x, sigma), want, rtol=1e-5, atol=1e-5)
