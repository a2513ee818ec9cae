"""Fault injection, bad input: config overrides, CLI arguments, sampler names, and the pure
sampler and likelihood API.  Faults in training runs (signals, workdirs, damaged checkpoints) are
in test_faults.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import cli
from scoresde_jax import config as C
from scoresde_jax.likelihood import bits_per_dim
from scoresde_jax.samplers import pc_sample
from scoresde_jax.sde import VPSDE
from scoresde_jax.training import distributed
from helpers import TinyScoreNet, run_job, tiny_config


def _cfg(**kw):  # test_faults' tiny config
    base = dict(n_iters=8, snapshot_freq=4, snapshot_freq_for_preemption=0, log_freq=1,
                eval_freq=0)
    base.update(kw)
    return tiny_config(**base)


TOY = ["train", "--config", "configs/toy_8gaussians.py", "--workdir"]


@pytest.mark.parametrize("value,ok", [("abc", False), ("8.0", False), ("8", True)])
def test_override_types_follow_config_flags(value, ok):
    if ok:
        assert C.load_config("configs/toy_8gaussians.py",
                             [f"training.batch_size={value}"]).training.batch_size == 8
    else:
        with pytest.raises(ValueError, match=f"--config.training.batch_size={value}: expected an "
                                             "integer"):
            C.load_config("configs/toy_8gaussians.py", [f"training.batch_size={value}"])


@pytest.mark.parametrize("raw,want", [("false", False), ("FALSE", False), ("0", False),
                                      ("True", True), ("1", True)])
def test_boolean_overrides(raw, want):
    cfg = C.load_config("configs/toy_8gaussians.py", [f"training.snapshot_sampling={raw}"])
    assert cfg.training.snapshot_sampling is want


def test_cli_bad_override_is_one_line_and_exit_2(tmp_path, capsys):
    rc = cli.main(TOY + [str(tmp_path), "--config.training.batch_size=abc"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "batch_size=abc" in err
    assert "Traceback" not in err


def test_cli_sample_needs_an_existing_workdir(tmp_path, capsys):
    assert cli.main(["sample", "--workdir", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_an_invalid_sampler_name_fails_before_training():
    cfg = _cfg()
    cfg.sampling.predictor = "euler_maruyamaa"
    with pytest.raises(ValueError, match="predictor"):
        C.setup(cfg, model=TinyScoreNet(), mesh=distributed.make_mesh(jax.devices()[:1]))


SDE = VPSDE(beta_min=0.1, beta_max=20.0, N=25)


def _score(x, t):
    return -x


@pytest.mark.parametrize("kw,match", [
    (dict(snr=-0.16), "snr"), (dict(snr=float("nan")), "snr"), (dict(eps=2.0), "eps"),
    (dict(eps=0.0), "eps"), (dict(shape=(4,)), "shape"),
    (dict(score_fn=lambda x, t: -x[:, :1]), "score_fn"),
])
def test_pc_sample_rejects_bad_arguments(kw, match):
    args = dict(score_fn=_score, shape=(4, 2))
    args.update(kw)
    score_fn, shape = args.pop("score_fn"), args.pop("shape")
    with pytest.raises(ValueError, match=match):
        pc_sample(score_fn, SDE, shape, jax.random.PRNGKey(0), corrector="langevin", **args)


@pytest.mark.parametrize("x,centered,match", [
    (jnp.full((2, 3), jnp.nan), True, "NaN"), (jnp.full((2, 3), jnp.inf), False, "NaN"),
    (jnp.full((2, 3), 100.0), True, "centered=True"),
    (-100 * jnp.ones((2, 3)), False, "centered=False"),
])
def test_bits_per_dim_checks_finite_data_in_range(x, centered, match):
    with pytest.raises(ValueError, match=match):
        bits_per_dim(_score, x, sde=SDE, rng=jax.random.PRNGKey(0), centered=centered)


def test_bits_per_dim_accepts_dequantized_data_within_tolerance():
    """Tolerance 1/128 of the range: pixels k / 255 plus dequantization noise u / 256 (at most
    1/256 beyond [0, 1], 1/128 beyond [-1, 1]) pass, [0, 1] data also pass as centered."""
    k = jnp.asarray([[0.0, 128.0, 255.0], [255.0, 3.0, 254.0]])
    y = k / 255 + jnp.asarray([[0.0, 0.5, 0.999], [0.99, 0.1, 0.7]]) / 256
    for x, centered in ((y, False), (2 * y - 1, True), (y, True)):
        res = bits_per_dim(_score, x, sde=SDE, rng=jax.random.PRNGKey(0), centered=centered)
        assert np.isfinite(np.asarray(res.bpd)).all()


@pytest.mark.parametrize("x,centered", [
    (jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), False),  # centered data said to be in [0, 1]
    (jnp.linspace(0.0, 1.0 + 1 / 64, 6).reshape(2, 3), False),
    (jnp.linspace(-1.0 - 1 / 32, 1.0, 6).reshape(2, 3), True),
    (jnp.linspace(0.0, 255.0, 6).reshape(2, 3), False),  # unscaled pixels
])
def test_bits_per_dim_rejects_data_outside_the_range_of_centered(x, centered):
    with pytest.raises(ValueError, match=f"centered={centered}") as e:
        bits_per_dim(_score, x, sde=SDE, rng=jax.random.PRNGKey(0), centered=centered)
    assert "data.centered" in str(e.value)
    if float(x.min()) == -1.0 and not centered:
        assert "pass centered=True" in str(e.value)
