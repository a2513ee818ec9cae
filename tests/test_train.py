"""Jitted train/eval steps and the training loop (tiny score model, embedded digits)."""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from scoresde_jax.training import distributed
from scoresde_jax import training
from scoresde_jax import config as C
from scoresde_jax.metrics_io import read_metrics
from helpers import TinyScoreNet, run_job, tiny_config


def _setup(config):
    return C.setup(config, model=TinyScoreNet(), mesh=distributed.make_mesh(jax.devices()[:1]))


def _batches(n, bs=16, seed=0):
    return jax.random.uniform(jax.random.PRNGKey(seed), (n, bs, 8, 8, 1)) * 2 - 1


def _leaves_equal(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        if tol:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize(
    "sde,continuous,likelihood_weighting,reduce_mean",
    [
        ("vpsde", True, False, False),  # continuous DSM
        ("vesde", True, True, False),  # continuous DSM with likelihood weighting
        ("subvpsde", True, False, True),
        ("vesde", False, False, False),  # SMLD
        ("vpsde", False, False, True),  # DDPM
    ],
)
def test_every_loss_trains_and_eval_uses_ema(sde, continuous, likelihood_weighting, reduce_mean):
    cfg = tiny_config(sde=sde, continuous=continuous, likelihood_weighting=likelihood_weighting,
                      reduce_mean=reduce_mean)
    s = _setup(cfg)
    state = s.init_state()
    train_fn = training.make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh)
    eval_fn = training.make_eval_fn(C.get_loss_fn(cfg, s, train=False), s.mesh)
    state, m = train_fn(state, _batches(3))
    assert int(state.step) == 3 and m.loss.shape == (3,)
    assert np.all(np.isfinite(m.loss)) and np.all(np.asarray(m.grad_norm) > 0)
    ev = eval_fn(state, _batches(1)[0])
    assert np.isfinite(float(ev))
    # eval_fn reads the EMA parameters: replacing the live params changes nothing.
    ev2 = eval_fn(state.replace(params=jax.tree.map(jnp.zeros_like, state.params)), _batches(1)[0])
    assert float(ev) == float(ev2)


def test_train_fn_compiles_once_and_scan_equals_single_steps():
    cfg = tiny_config()
    s = _setup(cfg)
    loss_fn = C.get_loss_fn(cfg, s, train=True)
    fn = training.make_train_fn(loss_fn, s.mesh)
    st = s.init_state()
    xs = _batches(4)
    for i in range(4):
        st, _ = fn(st, xs[i : i + 1])
    assert fn._cache_size() == 1, "the train step recompiled between calls"
    st2, m = training.make_train_fn(loss_fn, s.mesh)(s.init_state(), xs)  # n_jitted_steps = 4
    assert int(st2.step) == 4
    _leaves_equal(st.params, st2.params, rtol=1e-5, atol=1e-6)
    _leaves_equal(st.ema_params, st2.ema_params, rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_matches_mean_gradient_of_micro_batches():
    cfg = tiny_config(grad_accum_steps=2)
    s = _setup(cfg)
    loss_fn = C.get_loss_fn(cfg, s, train=True)
    st = s.init_state()
    x = _batches(1)[0]
    new, _ = jax.jit(training.make_step_fn(loss_fn, grad_accum_steps=2))(st, x)
    # Reference: micro-batch j = rows j, j+2, ...; key fold_in(step key, j); one update on the mean grad.
    key = training.stream_key(st.rng, training.TRAIN_STREAM, 0)
    # jitted (one program for both micro-batches): op by op every small op compiles its own
    grad_fn = jax.jit(jax.grad(lambda p, xb, k: loss_fn(p, xb, k)[0]))
    grads = [grad_fn(st.params, x[j::2], jax.random.fold_in(key, j)) for j in range(2)]
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    cfg1 = tiny_config()
    ref_tx = _setup(cfg1).tx

    @jax.jit
    def apply_mean(params, mean):
        upd, _ = ref_tx.update(mean, ref_tx.init(params), params)
        return jax.tree.map(lambda p, u: p + u, params, upd)

    ref = apply_mean(st.params, mean)
    assert int(new.step) == 1
    _leaves_equal(new.params, ref, rtol=1e-5, atol=1e-7)


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="n_jitted_steps"):
        _setup(tiny_config(n_jitted_steps=3))
    with pytest.raises(ValueError, match="training.sde"):
        _setup(tiny_config(sde="edm"))
    with pytest.raises(ValueError, match="grad_accum_steps"):
        _setup(tiny_config(grad_accum_steps=3))
    with pytest.raises(ValueError, match="optim.optimizer"):
        cfg = tiny_config()
        cfg.optim.optimizer = "lion"
        _setup(cfg)


def test_loop_resume_equals_unbroken_run_and_writes_logs(tmp_path):
    cfg = tiny_config(n_jitted_steps=2, log_freq=2, snapshot_freq=4, snapshot_freq_for_preemption=2, n_iters=8)
    full = run_job("train", cfg, str(tmp_path / "full"), model=TinyScoreNet(), progress=False)
    part = run_job("train", cfg, str(tmp_path / "part"), model=TinyScoreNet(), stop_at=6, progress=False)
    assert part.step == 6
    resumed = run_job("train", cfg, str(tmp_path / "part"), model=TinyScoreNet(), progress=False)
    assert full.step == resumed.step == 8
    _leaves_equal(full.state.params, resumed.state.params)
    _leaves_equal(full.state.ema_params, resumed.state.ema_params)
    recs = read_metrics(str(tmp_path / "full" / "metrics.jsonl"))
    assert [r["step"] for r in recs if "train/loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in recs if "eval/loss" in r] == [4, 8]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "full"))
    assert sorted(os.listdir(tmp_path / "full" / "checkpoints")) == ["4", "8"]


class _PoisonedDigits:
    """Wraps a data iterator; batch ``bad`` is NaN."""

    def __init__(self, it, bad):
        self.it, self.bad, self.k = it, bad, 0

    def __next__(self):
        b = next(self.it)
        self.k += 1
        if self.k == self.bad:
            b = dict(b, image=np.full_like(b["image"], np.nan))
        return b

    def get_state(self):
        return self.it.get_state()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(n_iters=8, snapshot_freq=8, snapshot_freq_for_preemption=2, eval_freq=0)
    tr, ev = C.get_dataset(cfg, split="train"), C.get_dataset(cfg, split="test", num_epochs=None)
    with pytest.raises(training.NonFiniteLossError, match=r"step 5\b.*last good checkpoint is step 4"):
        run_job("train", cfg, str(tmp_path), model=TinyScoreNet(), datasets=(_PoisonedDigits(tr, 5), ev), progress=False)
    assert sorted(os.listdir(tmp_path / "checkpoints-meta")) == ["4"]


def test_train_and_evaluate_samples_a_png_grid(tmp_path):
    cfg = tiny_config(n_iters=4, snapshot_freq=4, snapshot_sampling=True, eval_freq=0)
    cfg.training.snapshot_num_samples = 4
    cfg.model.num_scales = 25
    out = run_job("train_and_evaluate", cfg, str(tmp_path), num_samples=4, model=TinyScoreNet(), progress=False)
    assert os.path.exists(out["grid"]) and out["grid"].endswith(".png")
    assert os.path.exists(tmp_path / "samples" / "iter_4" / "grid.png")
    assert np.isfinite(out["quality"]["fid"]) and out["quality"]["num_samples"] == 4
    assert out["reference"].startswith("DIGITS test split")
    with open(os.path.join(out["rounds"], "results.json")) as f:
        assert json.load(f)["step"] == 4


def test_likelihood_of_a_trained_workdir(tmp_path):
    cfg = tiny_config(n_iters=2, snapshot_freq=2, eval_freq=0, batch_size=8)
    cfg.eval.batch_size = 8
    run_job("train", cfg, str(tmp_path), model=TinyScoreNet(), progress=False)
    out = run_job("likelihood", cfg, str(tmp_path), num_batches=1, model=TinyScoreNet())
    assert out["step"] == 2 and out["num_examples"] == 8 and np.isfinite(out["bpd"])


def test_n_iters_need_not_be_a_multiple_of_n_jitted_steps(tmp_path):
    # The paper's configs train 1300001 steps in dispatches of 5: the last dispatch is shorter.
    cfg = tiny_config(n_iters=5, n_jitted_steps=2, snapshot_freq=4, log_freq=2, eval_freq=0,
                      snapshot_freq_for_preemption=2)
    res = run_job("train", cfg, str(tmp_path), model=TinyScoreNet(), progress=False)
    assert res.step == 5 and int(res.state.step) == 5
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "5"]
    assert [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl"))] == [2, 4, 5]
