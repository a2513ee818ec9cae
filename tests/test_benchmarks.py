"""Issue 14: the row-building functions of the benchmarks give every row ``trace_s`` (jit trace +
lower) and ``compile_s`` (XLA compile), measured apart from running the program -- on tiny
settings (seconds): the likelihood rows, a sampler (mixture) row, the sampling-round timing of the
digits rows, and the guidance rows (the eval stubbed: no trained workdir here)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from benchmarks import bench_guidance, bench_likelihood, bench_samplers
from benchmarks.common import round_program_timed
from scoresde_jax import config as config_lib
from scoresde_jax.analytic import exact_score_fn
from scoresde_jax.sde import VPSDE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "toy_8gaussians.py")  # a small MLP: compiles in seconds


def _timed(row: dict) -> None:
    assert row["trace_s"] > 0 and row["compile_s"] > 0, row


def test_likelihood_rows_time_trace_and_compile():
    rows = bench_likelihood.run([2], 2, "vp", ["exact"], repeats=1)
    assert len(rows) == 1
    _timed(rows[0])
    assert rows[0]["compile_and_first_s"] >= rows[0]["trace_s"] + rows[0]["compile_s"] - 1e-2
    assert "trace_compile_s" not in rows[0]  # the old 'first call - warm call' estimate is gone


def test_sampler_mixture_row_times_trace_and_compile():
    """One row of the mixture sweep (the sweep's reference solve and SWD floor left out)."""
    with jax.enable_x64(True):
        mix, sde = bench_samplers.mixture(), VPSDE()
        x_T = jax.random.normal(jax.random.PRNGKey(0), (4, mix.dim), jnp.float64)
        r = bench_samplers.mixture_row(exact_score_fn(mix, sde), sde, "ddim", 3, eps=1e-3,
                                       x_T=x_T, ref=x_T, std=1.0, exact=x_T,
                                       proj=jax.random.PRNGKey(1))
    _timed(r)
    assert r["nfe"] <= 3 and r["seconds"] >= r["trace_s"] + r["compile_s"] - 1e-2
    assert r["run_s"] >= 0 and r["flow_error"] is not None and r["flow_compile_s"] > 0


def test_round_program_timed_digits_rows():
    """The digits rows' timing: the round commands.sample jits (any config; a toy one here)."""
    info = round_program_timed(config_lib.load_config(TOY, ["model.hidden_sizes=(16,)"]),
                               batch_size=2, method="ddim", nfe=3)
    _timed(info)


def test_guidance_rows_time_trace_and_compile(monkeypatch):
    # a class-conditional toy model (10 classes, as the digits) stands in for digits_conditional
    cond_config = config_lib.load_config(TOY, ["model.hidden_sizes=(16,)", "model.num_classes=10"])

    calls = []

    def fake_evaluate(config, workdir, **kw):  # no trained workdir here: the eval is stubbed
        calls.append(kw)
        return {"class_accuracy": 0.5, "quality": {"fid": 1.0, "kid": 0.0, "inception_score": 2.0},
                "rounds": workdir, "step": 7}

    monkeypatch.setattr(bench_guidance.commands, "evaluate", fake_evaluate)
    rows, step = bench_guidance.guidance_rows(
        cond_config, cond_dir="nowhere", clf=None, scales=[0.0, 2.0], num_samples=2,
        batch_size=2, method="ddim", nfe=3)
    assert step == 7 and [c["guidance"] for c in calls] == [0.0, 2.0]
    assert [r["scale"] for r in rows] == [0.0, 2.0]
    for r in rows:
        _timed(r)
    # the scales are data: one program, timed once, recorded on both rows
    assert rows[0]["trace_s"] == rows[1]["trace_s"] and rows[0]["compile_s"] == rows[1]["compile_s"]
