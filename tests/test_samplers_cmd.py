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
    assert os.path.dirname(out) == os.path.join(str(wd), "samples")
    assert os.path.basename(out).startswith("sample_2_dpm_solver_pp_3m_6_")  # + record digest
    assert x.shape == (10, 8, 8, 1) and 0 <= x.min() and x.max() <= 1
    rounds = sorted(f for f in os.listdir(out) if f.startswith("round_"))
    assert len(rounds) == 3
    with np.load(os.path.join(out, rounds[0])) as f:
        assert f["samples"].dtype == np.uint8 and f["samples"].shape == (4, 8, 8, 1)
    pngs = sorted(os.listdir(os.path.join(out, "png")))
    assert len(pngs) == 10 and Image.open(os.path.join(out, "png", pngs[0])).size == (8, 8)
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["method"] == "dpm_solver_pp_3m" and summary["nfe"] <= 6
    assert summary["job"] == "sample" and summary["version"] and summary["step"] == 2
    assert summary["checkpoint_step"] == 2 and summary["seconds_per_image"] > 0
    # a killed run: the last round is lost; the restart recomputes it alone, same samples
    os.remove(os.path.join(out, rounds[-1]))
    y, _ = run_job("sample", cfg, str(wd), **kw)
    np.testing.assert_array_equal(x, y)
    assert json.load(open(os.path.join(out, "summary.json")))["rounds_computed"] == 1
    with pytest.raises(ValueError, match=r"another run \(differs in options.seed\).*--overwrite"):
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


def test_a_changed_setting_never_reuses_rounds(workdir, tmp_path):
    """Issue 21: a rerun with another sampler option, SDE key or seed is never served the first
    run's rounds: the default folder is its own; an explicit --out refuses, --overwrite
    recomputes."""
    wd, cfg = workdir
    kw = dict(num_samples=4, batch_size=4, model=TinyScoreNet(), progress=False)
    a, sa = run_job("sample", cfg, str(wd), **kw)
    cfg2 = tiny_config(n_iters=2, snapshot_freq=2, snapshot_freq_for_preemption=0, eval_freq=0)
    cfg2.model.beta_max = 5.0  # another SDE, same checkpoint
    b, sb = run_job("sample", cfg2, str(wd), **kw)
    assert sb["grid"] != sa["grid"] and not np.array_equal(a, b)
    out = os.path.dirname(sa["grid"])
    with pytest.raises(ValueError, match="model.beta_max"):
        run_job("sample", cfg2, str(wd), out=out, **kw)
    c, _ = run_job("sample", cfg2, str(wd), out=out, overwrite=True, **kw)
    np.testing.assert_array_equal(b, c)


def test_images_do_not_depend_on_the_batch_size_and_seeds_name_images(workdir, tmp_path):
    wd, cfg = workdir
    kw = dict(model=TinyScoreNet(), progress=False, seed=3)
    x8, _ = run_job("sample", cfg, str(wd), num_samples=6, batch_size=6,
                    out=str(tmp_path / "a"), **kw)
    x2, _ = run_job("sample", cfg, str(wd), num_samples=6, batch_size=4,
                    out=str(tmp_path / "b"), **kw)
    np.testing.assert_allclose(x8, x2, atol=1 / 255 + 1e-6)  # uint8: a rare rounding flip
    assert np.mean(x8 != x2) < 0.01
    s1, _ = run_job("sample", cfg, str(wd), seeds="5-7", out=str(tmp_path / "c"),
                    model=TinyScoreNet(), progress=False)
    s2, _ = run_job("sample", cfg, str(wd), seeds="7,6", out=str(tmp_path / "d"),
                    model=TinyScoreNet(), progress=False)
    assert s1.shape[0] == 3
    np.testing.assert_allclose(s1[2], s2[0], atol=1 / 255 + 1e-6)
    np.testing.assert_allclose(s1[1], s2[1], atol=1 / 255 + 1e-6)


def test_bad_rounds_are_recomputed_and_rejected_runs_leave_nothing(workdir, tmp_path):
    wd, cfg = workdir
    kw = dict(num_samples=8, batch_size=4, model=TinyScoreNet(), progress=False,
              out=str(tmp_path / "r"))
    x, _ = run_job("sample", cfg, str(wd), **kw)
    r0 = tmp_path / "r" / "round_00000.npz"
    np.savez(r0, samples=np.zeros((4, 8, 8, 3), np.uint8))  # right length, wrong shape
    y, s = run_job("sample", cfg, str(wd), **kw)
    np.testing.assert_array_equal(x, y)
    assert s["rounds_computed"] == 1
    np.savez(r0, samples=np.full((4, 8, 8, 1), np.nan, np.float32))  # wrong dtype, NaN
    y, s = run_job("sample", cfg, str(wd), **kw)
    np.testing.assert_array_equal(x, y)
    for bad in (dict(method="ode", nfe=50), dict(method="heun", nfe=2), dict(nfe=0)):
        out = tmp_path / f"rejected_{len(os.listdir(tmp_path))}"
        with pytest.raises(ValueError):
            run_job("sample", cfg, str(wd), num_samples=4, model=TinyScoreNet(),
                    out=str(out), **bad)
        assert not out.exists()  # nothing left that could block the corrected rerun
