"""`scoresde` CLI: config overrides, clear errors, and a tiny end-to-end train -> samples -> metric."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from scoresde_jax import cli, runner
from scoresde_jax import config as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "digits_ddpmpp.py")
# The digits config shrunk to seconds: tiny U-Net, 4 steps, 25 sampling steps, 8 samples.
TINY = [
    "--config.model.nf=8", "--config.model.ch_mult=(1, 2)", "--config.model.attn_resolutions=()",
    "--config.model.num_scales=25", "--config.training.batch_size=8", "--config.training.n_iters=4",
    "--config.training.log_freq=2", "--config.training.eval_freq=2", "--config.training.snapshot_freq=4",
    "--config.training.snapshot_freq_for_preemption=2", "--config.training.snapshot_num_samples=4",
    "--config.eval.batch_size=8", "--config.eval.num_samples=8",
]


def test_split_overrides_accepts_both_forms():
    rest, ov = cli.split_overrides(["train", "--config", "c.py", "--config.training.n_iters=5",
                                    "--config.model.nf", "16", "--workdir", "w"])
    assert rest == ["train", "--config", "c.py", "--workdir", "w"]
    assert ov == ["training.n_iters=5", "model.nf=16"]


def test_overrides_are_applied_and_unknown_keys_rejected():
    cfg = C.load_config(CONFIG, ["training.n_iters=7", "model.ch_mult=(1, 2)", "training.grad_accum_steps=2"])
    assert cfg.training.n_iters == 7 and tuple(cfg.model.ch_mult) == (1, 2) and cfg.training.grad_accum_steps == 2
    with pytest.raises(ValueError, match="unknown key 'n_iter'"):
        C.load_config(CONFIG, ["training.n_iter=7"])
    with pytest.raises(ValueError, match="no section 'trainig'"):
        C.load_config(CONFIG, ["trainig.n_iters=7"])


def test_errors_exit_with_a_message(tmp_path, capsys):
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(tmp_path), "--config.training.n_iter=1"]) == 2
    assert "unknown key 'n_iter'" in capsys.readouterr().err
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(tmp_path), "--config.training.sde=edm"]) == 2
    assert "training.sde" in capsys.readouterr().err
    assert cli.main(["sample", "--config", CONFIG, "--workdir", str(tmp_path / "missing"), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err  # a missing workdir is an error, not created
    (tmp_path / "empty").mkdir()
    assert cli.main(["sample", "--config", CONFIG, "--workdir", str(tmp_path / "empty"), *TINY]) == 2
    assert "No checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])


def test_each_job_accepts_only_its_own_flags(capsys):
    for argv in (["likelihood", "--workdir", "w", "--num_samples", "8"],
                 ["likelihood", "--workdir", "w", "--out", "x"],
                 ["sample", "--workdir", "w", "--repeats", "2"],
                 ["train", "--config", CONFIG, "--workdir", "w", "--method", "ddim"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def test_help_lists_every_job_and_each_job_its_own_arguments(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in ("train", "sample", "eval", "likelihood", "stats", "convert"))
    with pytest.raises(SystemExit):
        cli.main(["sample", "--help"])
    out = capsys.readouterr().out
    assert "--nfe" in out and "--class" in out and "--repeats" not in out


def test_train_writes_checkpoints_and_logs_and_resumes(tmp_path, capsys):
    wd = tmp_path / "run"
    fast = [*TINY, "--config.training.snapshot_sampling=False", "--config.training.eval_freq=0"]
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(wd), "--no_progress", "--no_evaluate",
                     *fast]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    assert sorted(os.listdir(wd / "checkpoints")) == ["4"]
    assert os.path.exists(wd / "metrics.jsonl")
    # Training again is a no-op resume from the last checkpoint.
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(wd), "--no_progress", "--no_evaluate",
                     *fast]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4


@pytest.mark.slow
def test_train_end_to_end_writes_checkpoints_logs_samples_and_metric(tmp_path, capsys):
    wd = tmp_path / "run"
    assert cli.main(["train", "--config", CONFIG, "--workdir", str(wd), "--no_progress", *TINY]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == 4 and set(out["quality"]) >= {"fid", "inception_score"}
    assert os.path.exists(out["grid"]) and out["grid"].endswith(".png")
    assert os.path.exists(wd / "samples" / "iter_4" / "grid.png")
    assert sorted(os.listdir(wd / "checkpoints")) == ["4"]
    assert os.path.exists(wd / "metrics.jsonl")
    assert os.path.exists(os.path.join(out["rounds"], "results.json"))


@pytest.mark.slow
def test_the_cli_in_a_subprocess_and_the_sample_job(tmp_path):
    wd = tmp_path / "run"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    cache = tmp_path / "xla"
    r = subprocess.run([sys.executable, "-m", "scoresde_jax.cli", "train", f"--config={CONFIG}",
                        f"--workdir={wd}", "--no_evaluate", f"--compilation_cache={cache}", *TINY],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(wd / "checkpoints")) == ["4"]
    assert any(cache.iterdir())  # the persistent compilation cache is on
    png = tmp_path / "grid.png"
    assert cli.main(["sample", "--config", CONFIG, "--workdir", str(wd), "--num_samples", "4",
                     "--out", str(png), *TINY]) == 0
    assert png.exists()


def test_convert_official_checkpoint_into_a_workdir(tmp_path, capsys):
    import jax
    import numpy as np
    from test_convert import official_state, write_checkpoint

    from scoresde_jax import training
    from scoresde_jax import config as C
    from scoresde_jax.training.checkpoint import restore_params
    from scoresde_jax.config import param_shapes

    config = C.load_config(CONFIG, [a[len("--config."):] for a in TINY])
    rng = np.random.default_rng(0)
    raw, ema = (jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), param_shapes(config))
                for _ in range(2))
    ckpt = write_checkpoint(tmp_path / "official", official_state(raw, ema, step=12), step=12)
    wd = tmp_path / "run"
    assert cli.main(["convert", "--config", CONFIG, "--workdir", str(wd), "--checkpoint", str(ckpt), *TINY]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 12
    s = C.setup(config)
    params, step = restore_params(str(wd), s.abstract_state())
    assert step == 12
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ema)):
        np.testing.assert_array_equal(np.asarray(a), b)


@pytest.mark.parametrize("error, code, words", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (PermissionError(13, "Permission denied", "/x"), 2, "PermissionError"),
    (NotADirectoryError(20, "Not a directory", "/f/sub"), 2, "NotADirectoryError"),
    (ModuleNotFoundError("No module named 'torch'"), 2, "optional dependency"),
    (TypeError("get_config() of c.py returned a dict"), 2, "returned a dict"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"), 2, "--batch_size"),
])
def test_every_failure_is_one_line(monkeypatch, capsys, tmp_path, error, code, words):
    def fail(*a, **k):
        raise error

    monkeypatch.setattr(runner, "run", fail)
    monkeypatch.setattr(cli, "config_problem", lambda *a: None)  # a job's failure, past the config
    assert cli.main(["sample", "--workdir", str(tmp_path)]) == code
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


def test_a_config_whose_get_config_returns_another_type(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def get_config():\n    return {'training': {}}\n")
    with pytest.raises(TypeError, match="ConfigDict"):
        C.load_config(str(bad))
