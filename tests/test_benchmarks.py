"""Issue 14: the row-building functions of the benchmarks give every row ``trace_s`` (jit trace +
lower) and ``compile_s`` (XLA compile), measured apart from running the program -- on tiny
settings (seconds): the likelihood rows, a sampler (mixture) row, the digits FID rows and the
guidance rows (their sampling / eval jobs stubbed: no trained workdir here; the timed program is
the real sampling round of a toy config)."""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp

from benchmarks import bench_guidance, bench_likelihood, bench_samplers
from scoresde_jax import config as config_lib
from scoresde_jax.analytic import exact_score_fn
from scoresde_jax.jobs.sample import SampleOutput
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


def test_guidance_rows_time_trace_and_compile(monkeypatch):
    # a class-conditional toy model (10 classes, as the digits) stands in for digits_conditional
    cond_config = config_lib.load_config(TOY, ["model.hidden_sizes=(16,)", "model.num_classes=10"])

    calls = []

    def fake_evaluate(setup, options, workdir):  # no trained workdir here: the eval is stubbed
        calls.append(options)
        return {"class_accuracy": 0.5, "quality": {"fid": 1.0, "kid": 0.0, "inception_score": 2.0},
                "rounds": workdir, "step": 7, "reference": "test digits"}

    monkeypatch.setattr(bench_guidance.eval_job, "evaluate", fake_evaluate)
    rows, step = bench_guidance.guidance_rows(
        cond_config, cond_dir="nowhere", clf=None, scales=[0.0, 2.0], num_samples=2,
        batch_size=2, method="ddim", nfe=3)
    assert step == 7 and [o.cond.guidance for o in calls] == [0.0, 2.0]
    assert all(o.cond.classes == tuple(range(10)) and o.sampler.method == "ddim"
               and o.sampler.nfe == 3 and o.num_samples == 2 for o in calls)
    assert [r["scale"] for r in rows] == [0.0, 2.0]
    for r in rows:
        _timed(r)
    # the scales are data: one program, timed once, recorded on both rows
    assert rows[0]["trace_s"] == rows[1]["trace_s"] and rows[0]["compile_s"] == rows[1]["compile_s"]


def test_sampler_digits_rows_time_trace_and_compile(tmp_path, monkeypatch):
    """The digits FID rows (the sampling job stubbed; a toy config stands in for the digits):
    each row carries its round's timing, and the two PC seeds share one timed program."""
    (tmp_path / "checkpoints" / "1").mkdir(parents=True)
    calls = []

    def fake_sample(setup, options, workdir):
        o = options
        calls.append((o.sampler.method, o.sampler.nfe, o.seed))
        assert workdir == str(tmp_path) and o.checkpoint == 1 and o.num_samples == 2
        return SampleOutput(jax.random.normal(jax.random.PRNGKey(o.seed), (o.num_samples, 2)),
                            {"nfe": o.sampler.nfe, "seconds_per_image": 0.1, "checkpoint_step": 1})

    monkeypatch.setattr(bench_samplers.sample_job, "sample", fake_sample)
    monkeypatch.setattr(bench_samplers, "sample_quality", lambda setup, x: {"fid": 1.0})
    args = argparse.Namespace(workdir=str(tmp_path), config=TOY, digits_checkpoint=None,
                              digits_pc_nfe=50, digits_nfe=[3], nfe=[3], digits_methods=["ddim"],
                              digits_grids=[], digits_samples=2,
                              out=str(tmp_path / "bench_samplers.json"))
    rows = bench_samplers.digits_rows(args)
    assert calls == [("pc", 50, 0), ("ddim", 3, 0), ("pc", 50, 1)]
    for r in rows:
        _timed(r)
    assert (rows[0]["trace_s"], rows[0]["compile_s"]) == (rows[2]["trace_s"], rows[2]["compile_s"])
