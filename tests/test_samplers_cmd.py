"""The ``sample`` command: method and NFE budget, resumable rounds, uint8 npz per round, per-image
PNGs, grid and summary, and the sampling config keys as overrides."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from scoresde_jax import config as C
from helpers import TinyScoreNet, run_job, tiny_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("run")
    cfg = tiny_config(n_iters=2, snapshot_freq=2, snapshot_freq_for_preemption=0, eval_freq=0)
    run_job("train", cfg, str(wd), model=TinyScoreNet(), progress=False)
    return wd, cfg


def test_rounds_budget_pngs_summary_and_resume(workdir):
    wd, cfg = workdir
    kw = dict(num_samples=10, batch_size=4, method="dpm_solver_pp_3m", nfe=6, png=True,
              model=TinyScoreNet(), progress=False)
    x, summary = run_job("sample", cfg, str(wd), **kw)
    out = os.path.dirname(summary["grid"])
    assert out == os.path.join(str(wd), "samples", "sample_2_dpm_solver_pp_3m_6")
    assert x.shape == (10, 8, 8, 1) and 0 <= x.min() and x.max() <= 1
    rounds = sorted(f for f in os.listdir(out) if f.startswith("round_"))
    assert len(rounds) == 3
    with np.load(os.path.join(out, rounds[0])) as f:
        assert f["samples"].dtype == np.uint8 and f["samples"].shape == (4, 8, 8, 1)
    pngs = sorted(os.listdir(os.path.join(out, "png")))
    assert len(pngs) == 10 and Image.open(os.path.join(out, "png", pngs[0])).size == (8, 8)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["method"] == "dpm_solver_pp_3m" and summary["nfe"] <= 6
    assert summary["checkpoint_step"] == 2 and summary["seconds_per_image"] > 0
    # a killed run: the last round is lost; the restart recomputes it alone, same samples
    os.remove(os.path.join(out, rounds[-1]))
    y, _ = run_job("sample", cfg, str(wd), **kw)
    np.testing.assert_array_equal(x, y)
    assert json.load(open(os.path.join(out, "summary.json")))["rounds_computed"] == 1
    with pytest.raises(ValueError, match="another run"):
        run_job("sample", cfg, str(wd), **{**kw, "seed": 1, "out": out})


def test_png_out(workdir, tmp_path):
    wd, cfg = workdir
    x, summary = run_job("sample", cfg, str(wd), num_samples=4, out=str(tmp_path / "g.png"),
                         model=TinyScoreNet())
    path = summary["grid"]
    assert path == str(tmp_path / "g.png") and os.path.exists(path) and x.shape[0] == 4


def test_every_sampling_key_is_an_override():
    keys = ["method=unipc", "num_steps=7", "order=3", "grid=edm", "nfe=9", "S_churn=5.0",
            "rtol=0.01", "max_nfe=31", "eta=0.5", "r=0.4", "rho=5.0"]
    cfg = C.load_config("configs/digits_ddpmpp.py", [f"sampling.{k}" for k in keys])
    method, options = C.sampler_options(cfg)
    assert method == "unipc" and options["order"] == 3 and options["grid"] == "edm"
    method, options = C.sampler_options(cfg, "edm")
    assert method == "edm" and options["S_churn"] == 5.0 and "order" not in options
