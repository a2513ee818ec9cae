"""Training on the 2-D toy datasets: the MLP score network through ``scoresde train`` (train, then the
eval report)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import evaluation, models

from helpers import run_job
from scoresde_jax import config as C
from scoresde_jax.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(path: str = "configs/toy_8gaussians.py"):
    return load_config(os.path.join(ROOT, path))


def test_mlp_shapes_and_create_model():
    config = _config()
    model = C.create_model(config)
    assert isinstance(model, models.MLP)
    params = C.init_model(jax.random.key(0), config)
    x = jnp.ones((5, 2))
    labels = jnp.linspace(0.0, 499.0, 5)
    out = model.apply({"params": params}, x, labels, train=False)
    assert out.shape == (5, 2) and out.dtype == x.dtype
    assert C.example_shape(config) == (2,)
    config.model.embedding_type = "fourier"
    fourier = C.create_model(config)
    p = fourier.init(jax.random.key(1), x, jnp.full((5,), 0.5))["params"]
    assert fourier.apply({"params": p}, x, jnp.full((5,), 0.5)).shape == (5, 2)
    with pytest.raises(ValueError, match="vector data"):
        model.apply({"params": params}, jnp.ones((2, 4, 4, 1)), jnp.zeros((2,)))


def test_toy_metrics_orders_exact_and_prior_samples():
    from scoresde_jax import analytic, data

    mix = data.get_toy_distribution("TOY_8GAUSSIANS")
    exact = np.asarray(analytic.sample_mixture(mix, jax.random.key(3), 1000))
    m = evaluation.toy_metrics("TOY_8GAUSSIANS", exact, seed=0)
    assert m["swd"] < 2 * m["swd_floor"] + 0.05
    assert m["swd_prior"] > 2 * m["swd"]  # the floor is noisy: mode counts fluctuate


def test_short_toy_training_beats_the_prior(tmp_path):
    config = _config()
    t = config.training
    t.n_iters = 400
    t.batch_size = 256
    t.log_freq = 100
    t.eval_freq = 200
    t.snapshot_freq = 400
    t.snapshot_freq_for_preemption = 200
    t.snapshot_num_samples = 256
    config.model.num_scales = 200
    config.model.ema_rate = 0.99
    config.optim.warmup = 50
    res = run_job("train_and_evaluate", config, str(tmp_path), num_samples=1000, progress=False)
    assert res["step"] == 400
    q = res["quality"]
    assert set(q) == {"swd", "swd_floor", "swd_prior", "num_samples"}
    # Prior N(0, I) samples (an untrained VP model) are ~0.55 away; two exact sets ~0.1-0.2.
    assert q["swd"] < 0.5 * q["swd_prior"], q
    assert q["swd"] < q["swd_floor"] + 0.2, q
    assert os.path.exists(res["grid"]) and res["grid"].endswith(".png")
    samples = np.concatenate([np.load(os.path.join(res["rounds"], f))["samples"]
                              for f in sorted(os.listdir(res["rounds"])) if f.startswith("round_")])
    assert samples.shape == (1000, 2) and np.all(np.isfinite(samples))
    assert res["reference"].startswith("exact samples of TOY_8GAUSSIANS")
    assert os.path.exists(tmp_path / "samples" / "iter_400" / "grid.png")
    with open(os.path.join(res["rounds"], "results.json")) as f:
        assert json.load(f)["quality"]["swd"] == pytest.approx(q["swd"])


@pytest.mark.slow
@pytest.mark.parametrize("path", ["configs/toy_8gaussians.py", "configs/toy_checkerboard.py"])
def test_toy_configs_reach_the_floor(tmp_path, path):
    res = run_job("train_and_evaluate", _config(path), str(tmp_path), progress=False)
    q = res["quality"]
    assert q["swd"] < q["swd_floor"] + 0.1, q
