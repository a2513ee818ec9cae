"""Training on a folder through the command line, with only data overrides on an existing
config: ``scoresde train --config configs/digits_ddpmpp.py --config.data.dataset=folder
--config.data.path=DIR`` on a folder and a zip of PNGs (tiny network, a few steps), class
subfolders reaching a conditional model (the names in config.json), a wrong class count and a
corrupt file stopping before training with one line naming them."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from scoresde_jax import cli
from scoresde_jax.data import load_digits_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "digits_ddpmpp.py")
COND = os.path.join(ROOT, "configs", "digits_conditional.py")
TINY = ["--config.model.nf=8", "--config.model.ch_mult=(1,)", "--config.model.attn_resolutions=()",
        "--config.model.num_scales=25", "--config.training.batch_size=8",
        "--config.training.n_iters=2", "--config.training.log_freq=1",
        "--config.training.eval_freq=0", "--config.training.snapshot_freq=2",
        "--config.training.snapshot_freq_for_preemption=0",
        "--config.training.snapshot_sampling=false", "--config.eval.batch_size=8",
        "--no_progress", "--no_evaluate"]


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """The first 60 train digits as 8x8 grayscale PNGs in class subfolders 0, 1, 2."""
    root = tmp_path_factory.mktemp("digits_png")
    x, y = load_digits_images("train")
    for i, (img, label) in enumerate(zip(x, y)):
        if label < 3 and i < 120:
            os.makedirs(root / f"digit{label}", exist_ok=True)
            Image.fromarray(np.rint(img[..., 0] * 255).astype(np.uint8)).save(
                root / f"digit{label}" / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A compilation cache shared by the runs (same shapes: compiled once)."""
    return ["--compilation_cache", str(tmp_path_factory.mktemp("xla"))]


@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def train(config, workdir, path, *extra):
    return cli.main(["train", "--config", config, "--workdir", str(workdir), *TINY,
                     "--config.data.dataset=folder", f"--config.data.path={path}", *extra])


def test_folder_and_zip_train_with_data_overrides_only(tmp_path, digits_folder, cache):
    assert train(CONFIG, tmp_path / "wd", digits_folder, *cache) == 0
    assert os.listdir(tmp_path / "wd" / "checkpoints")
    saved = json.loads((tmp_path / "wd" / "config.json").read_text())["config"]["data"]
    assert saved["dataset"] == "folder" and saved["path"] == str(digits_folder)
    archive = tmp_path / "digits.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for top, _, names in os.walk(digits_folder):
            for n in names:
                z.write(os.path.join(top, n), os.path.relpath(os.path.join(top, n), digits_folder))
    assert train(CONFIG, tmp_path / "wd_zip", archive, *cache) == 0  # compiled once
    saved = json.loads((tmp_path / "wd_zip" / "config.json").read_text())["config"]["data"]
    assert saved["path"] == str(archive) and os.listdir(tmp_path / "wd_zip" / "checkpoints")


def test_class_folders_reach_a_conditional_model(tmp_path, digits_folder, cache, capsys):
    assert train(COND, tmp_path / "cond", digits_folder, "--config.model.num_classes=3",
                 *cache) == 0
    saved = json.loads((tmp_path / "cond" / "config.json").read_text())["config"]
    assert saved["data"]["class_names"] == ["digit0", "digit1", "digit2"]
    assert saved["model"]["num_classes"] == 3
    assert train(COND, tmp_path / "cond10", digits_folder, *cache) == 2  # 10 classes configured
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "has 3 class folders ['digit0', 'digit1', 'digit2'] but model.num_classes=10" in err


def test_a_corrupt_file_is_named_before_training(tmp_path, digits_folder, capsys):
    bad = tmp_path / "data"
    (bad / "a").mkdir(parents=True)
    for name in sorted(os.listdir(digits_folder / "digit0"))[:8]:
        (bad / "a" / name).write_bytes((digits_folder / "digit0" / name).read_bytes())
    (bad / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert train(CONFIG, tmp_path / "wd", bad) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "a/broken.png" in err and "skip_bad_files=True" in err
    assert not (tmp_path / "wd" / "checkpoints").exists()
