"""The likelihood job over a dataset: exact score on the 8-Gaussians toy gives the exact NLL (no
8-bit offset on continuous data), and a killed and resumed job equals an unbroken one."""

from __future__ import annotations

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import analytic
from scoresde_jax import config as C
from scoresde_jax.jobs import rounds
from scoresde_jax.data.toy import get_toy_distribution
from scoresde_jax.parameterization import score_to_output

from helpers import run_job

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "toy_8gaussians.py")


class ExactNet(nn.Module):
    """``(x, labels) -> output`` with ``output_to_score(output) = exact mixture score``."""

    sde: object = None

    @nn.compact
    def __call__(self, x, labels, train: bool = False):
        unused = self.param("unused", nn.initializers.zeros, ())
        t = labels / (self.sde.N - 1)
        score = analytic.exact_score_fn(get_toy_distribution("TOY_8GAUSSIANS"), self.sde)(x, t)
        return score_to_output(self.sde, score, t, continuous=True) + 0.0 * unused


def _config(**eval_kw):
    cfg = C.load_config(CONFIG)
    cfg.eval.batch_size = 64
    cfg.eval.update(eval_kw)
    return cfg


def _exact(cfg):
    sde, _ = C.get_sde(cfg)
    model = ExactNet(sde=sde)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1,)))["params"]
    return model, params


@pytest.mark.slow
def test_toy_bits_per_dim_of_the_exact_score_is_the_exact_nll(tmp_path):
    cfg = _config()
    model, params = _exact(cfg)
    out = run_job("likelihood", cfg, str(tmp_path), model=model, params=params, num_examples=128,
                              repeats=1, progress=False)
    print(out)
    assert out["offset"] == 0.0 and out["dequantize"] is False and out["num_examples"] == 128
    mix = get_toy_distribution("TOY_8GAUSSIANS")
    big = analytic.sample_mixture(mix, jax.random.PRNGKey(1), 200_000)
    entropy = float(-np.mean(np.asarray(analytic.mixture_logp(mix, big))) / 2 / math.log(2.0))
    assert abs(entropy - 0.23) < 0.01  # the exact NLL of the distribution: 0.23 bits/dim
    assert abs(out["bpd"] - entropy) < 3 * out["bpd_stderr"], (out, entropy)
    # paired, per example: the ODE likelihood of the exact score is the exact log density
    total, read = C.data_spec(cfg).split_reader("test", batch_size=64, num_examples=128)
    x = np.concatenate([read(0, 64), read(1, 64)])
    exact = -np.asarray(analytic.mixture_logp(mix, x)) / 2
    logp = np.concatenate([np.load(os.path.join(out["rounds"], f))["logp"][:, 0]
                           for f in sorted(os.listdir(out["rounds"])) if f.startswith("round_")])
    diff = -logp / 2 - exact
    print("paired nats/dim difference", diff.mean(), diff.std())
    assert abs(diff.mean()) < 3 * diff.std() / math.sqrt(len(diff)) + 0.01


def test_killed_and_resumed_likelihood_equals_an_unbroken_one(tmp_path, monkeypatch):
    cfg = _config()
    model, params = _exact(cfg)
    kw = dict(model=model, params=params, num_examples=20, repeats=1, progress=False,
              batch_size=8)
    full = run_job("likelihood", cfg, str(tmp_path / "a"), **kw)
    real_save, calls = rounds._save, []

    def dying_save(path, arrays):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed while writing round 1
        real_save(path, arrays)

    monkeypatch.setattr(rounds, "_save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        run_job("likelihood", cfg, str(tmp_path / "b"), **kw)
    monkeypatch.setattr(rounds, "_save", real_save)
    resumed = run_job("likelihood", cfg, str(tmp_path / "b"), **kw)
    assert resumed["bpd"] == full["bpd"] and resumed["num_examples"] == 20
    assert len([f for f in os.listdir(resumed["rounds"]) if f.startswith("round_")]) == 3
