"""Training config history (fault injection on restarts): ``config.json`` describes the
checkpoints beside it and is written only by an accepted start's first save; every accepted start
appends to ``config_history.jsonl``; a changed model, SDE or data is refused unless
``--allow_config_change``; optimizer changes are allowed and recorded; ``--workdir ""`` and a file
as the workdir are refused before anything is created."""

from __future__ import annotations

import json
import os
import shutil

import pytest

import scoresde_jax
from scoresde_jax import cli, training
from scoresde_jax import config as C
from scoresde_jax.training import workdir as W
from helpers import TinyScoreNet, run_job, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "toy_8gaussians.py")
TOY_FAST = ["--config.training.batch_size=16", "--config.training.n_iters=2",
            "--config.training.log_freq=1", "--config.training.eval_freq=0",
            "--config.training.snapshot_freq=2", "--config.training.snapshot_freq_for_preemption=0",
            "--config.training.snapshot_sampling=False",
            "--no_progress", "--no_evaluate"]


def _cfg(**kw):
    base = dict(n_iters=4, snapshot_freq=4, snapshot_freq_for_preemption=0, log_freq=1,
                eval_freq=0)
    base.update(kw)
    return tiny_config(**base)


def _train(cfg, workdir, **kw):
    return run_job("train", cfg, str(workdir), model=TinyScoreNet(), progress=False, **kw)


def _files(workdir):
    """(config.json bytes, history lines) of a workdir."""
    hist = os.path.join(workdir, W.HISTORY_FILE)
    with open(os.path.join(workdir, W.CONFIG_FILE), "rb") as f:
        saved = f.read()
    with open(hist) as f:
        return saved, [json.loads(ln) for ln in f]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A workdir trained 4 steps (lr 2e-3), copied by each test."""
    workdir = tmp_path_factory.mktemp("base") / "run"
    _train(_cfg(), workdir)
    return workdir


@pytest.fixture
def run(base, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(base, dst)
    return dst


def test_the_first_start_writes_config_json_and_one_history_line(run):
    saved, hist = _files(run)
    assert json.loads(saved)["config"]["optim"]["lr"] == 2e-3
    assert len(hist) == 1
    first = hist[0]
    assert first["step"] == 0 and first["changed"] == [] and first["allowed"] == []
    assert first["version"] == scoresde_jax.__version__
    assert isinstance(first["argv"], list) and first["config"]["optim"]["lr"] == 2e-3


@pytest.mark.parametrize("override,key", [
    ("model.beta_max=5.0", "model.beta_max: 20.0 -> 5.0"),
    ("model.num_scales=50", "model.num_scales: 100 -> 50"),
    ("training.sde=vesde", "training.sde: 'vpsde' -> 'vesde'"),
    ("training.continuous=False", "training.continuous: True -> False"),
    ("data.centered=False", "data.centered: True -> False"),
])
def test_a_changed_model_sde_or_data_is_refused_and_nothing_written(run, override, key):
    cfg = _cfg()
    C.apply_override(cfg, override)
    before = _files(run)
    with pytest.raises(W.ConfigChangeError) as e:
        _train(cfg, run)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and "--allow_config_change" in msg
    assert _files(run) == before  # config.json and history as they were
    assert not os.path.exists(run / W.LOCK_FILE)


def test_allow_config_change_continues_and_records_it(run):
    cfg = _cfg(n_iters=6, snapshot_freq=2)
    cfg.model.beta_max = 5.0
    _train(cfg, run, allow_config_change=True)
    saved, hist = _files(run)
    assert json.loads(saved)["config"]["model"]["beta_max"] == 5.0
    assert hist[-1]["allowed"] == ["model.beta_max: 20.0 -> 5.0"] and hist[-1]["step"] == 4
    assert "model.beta_max: 20.0 -> 5.0" in hist[-1]["changed"]
    # The next start of the same config is no change.
    _train(cfg, run)
    assert _files(run)[1][-1]["changed"] == []


@pytest.mark.parametrize("override", ["optim.grad_clip=0.5", "training.log_freq=2",
                                      "sampling.snr=0.2", "eval.num_samples=8"])
def test_other_keys_may_change_and_are_recorded(run, override):
    cfg = _cfg()  # n_iters reached: the start restores and stops, nothing is trained or saved
    C.apply_override(cfg, override)
    saved_before = _files(run)[0]
    _train(cfg, run)
    saved, hist = _files(run)
    assert saved == saved_before  # no new checkpoint: config.json still describes step 4's
    assert len(hist) == 2 and hist[-1]["step"] == 4
    assert len(hist[-1]["changed"]) == 1 and hist[-1]["changed"][0].startswith(
        override.split("=")[0] + ":")


def test_lower_lr_after_a_nan_stop(run):
    """lr 1e30 diverges before its first save: config.json keeps describing step 4 (lr 2e-3);
    the documented way out (a lower lr) is accepted and recorded."""
    bad = _cfg(n_iters=8, snapshot_freq=8, snapshot_freq_for_preemption=2)
    bad.optim.lr = 1e30
    with pytest.raises(training.NonFiniteLossError, match="last good checkpoint is step 4"):
        _train(bad, run)
    saved, hist = _files(run)
    assert json.loads(saved)["config"]["optim"]["lr"] == 2e-3
    assert hist[-1]["step"] == 4 and "optim.lr: 0.002 -> 1e+30" in hist[-1]["changed"]
    good = _cfg(n_iters=6, snapshot_freq=6)
    good.optim.lr = 1e-4
    assert _train(good, run).step == 6
    saved, hist = _files(run)
    assert json.loads(saved)["config"]["optim"]["lr"] == 1e-4
    assert "optim.lr: 1e+30 -> 0.0001" in hist[-1]["changed"] and len(hist) == 3


def test_a_start_refused_for_another_batch_size_leaves_config_json(run):
    before = _files(run)
    with pytest.raises(ValueError, match="batch size"):
        _train(_cfg(n_iters=8, batch_size=8), run)
    assert _files(run) == before


def test_damaged_config_json_falls_back_to_the_history(run):
    (run / W.CONFIG_FILE).write_text("{")
    cfg = _cfg()
    cfg.model.beta_max = 5.0
    with pytest.raises(W.ConfigChangeError, match="model.beta_max"):
        _train(cfg, run)


def test_empty_workdir_or_a_file_is_refused_before_anything_is_created(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="--workdir is empty"):
        _train(_cfg(), "")
    (tmp_path / "f").write_text("x")
    for bad in ("f", "f/sub"):
        with pytest.raises(ValueError, match="is a file, not a directory"):
            _train(_cfg(), bad)
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_the_cli_refuses_in_one_line_and_allows_with_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--config", TOY, "--workdir", "", *TOY_FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--workdir is empty" in err
    assert os.listdir(tmp_path) == []
    wd = str(tmp_path / "toy")
    assert cli.main(["train", "--config", TOY, "--workdir", wd, *TOY_FAST]) == 0
    capsys.readouterr()
    changed = [*TOY_FAST, "--config.model.beta_max=5.0", "--config.optim.lr=1e-4",
               "--config.training.n_iters=4"]
    assert cli.main(["train", "--config", TOY, "--workdir", wd, *changed]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.beta_max: 20.0 -> 5.0" in err
    assert "optim.lr" not in err and "--allow_config_change" in err
    assert cli.main(["train", "--config", TOY, "--workdir", wd, *changed,
                     "--allow_config_change"]) == 0
    capsys.readouterr()
    hist = W.read_history(wd)
    assert len(hist) == 2 and hist[-1]["step"] == 2
    assert hist[-1]["allowed"] == ["model.beta_max: 20.0 -> 5.0"]
    assert "optim.lr: 0.002 -> 0.0001" in hist[-1]["changed"]
    assert C.config_for_workdir(None, wd).model.beta_max == 5.0  # config.json: step 4's config
