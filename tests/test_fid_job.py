"""``scoresde fid --images DIR --ref STATS_OR_DIR``: FID / IS / KID of any folder or zip of images
(PNG folders of the embedded digits built in tmp dirs, digits-classifier features): a set
against itself scores 0, held-out digits score near the floor and noise far above, a statistics
file gives the numbers of the folder it came from, resumable rounds keyed by the inputs, the
results file, one-line errors. The Inception path (with ``scoresde stats`` on a folder dataset)
is a slow test with random Inception weights."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from scoresde_jax import cli, evaluation
from scoresde_jax.data import load_digits_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def scan_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def write_pngs(root, images):
    """uint8 ``(N, H, W, 1|3)`` images as ``root/00000.png`` ...; returns ``str(root)``."""
    os.makedirs(root, exist_ok=True)
    for i, x in enumerate(images):
        Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x).save(os.path.join(root, f"{i:05d}.png"))
    return str(root)


def digits_uint8(split, n, size=8):
    x, _ = load_digits_images(split, image_size=size)
    return np.rint(x[:n] * 255).astype(np.uint8)


def run_fid(tmp_path, images, ref, *extra, out="fid.json"):
    out = str(tmp_path / out)
    code = cli.main(["fid", "--images", images, "--ref", ref, "--features", "digits", "--out", out,
                     "--no_progress", "--batch_size", "64", *extra])
    assert code == 0
    with open(out) as f:
        return json.load(f)


@pytest.fixture
def digit_sets(tmp_path):
    return {"test": write_pngs(tmp_path / "test", digits_uint8("test", 120)),
            "train": write_pngs(tmp_path / "train", digits_uint8("train", 300)),
            "noise": write_pngs(tmp_path / "noise", np.random.default_rng(0).integers(
                0, 256, (120, 8, 8, 1), dtype=np.uint8))}


def test_fid_of_folders_with_digits_features(tmp_path, digit_sets):
    same = run_fid(tmp_path, digit_sets["test"], digit_sets["test"], out="same.json")
    assert abs(same["quality"]["fid"]) < 1e-6
    real = run_fid(tmp_path, digit_sets["test"], digit_sets["train"], out="real.json")
    noise = run_fid(tmp_path, digit_sets["noise"], digit_sets["train"], out="noise.json")
    assert real["quality"]["fid"] < 10 < 50 < noise["quality"]["fid"]
    assert real["quality"]["inception_score"] > 5 > noise["quality"]["inception_score"]
    assert real["images"]["num_images"] == 120 and real["images"]["image_size"] == 8
    assert real["reference"]["images"]["num_images"] == 300
    assert real["features"] == "digits_classifier" and real["job"] == "fid"
    rounds = os.listdir(tmp_path / "real.rounds")
    assert sorted(r.split("_")[0] for r in rounds) == ["images", "ref"]


def test_statistics_file_gives_the_folders_numbers_and_rounds_resume(tmp_path, digit_sets):
    net, _ = evaluation.feature_network("DIGITS")
    feats, _ = net(digits_uint8("train", 300))
    stats = evaluation.save_reference(str(tmp_path / "train_stats.npz"), feats)
    by_folder = run_fid(tmp_path, digit_sets["test"], digit_sets["train"], out="a.json")
    by_file = run_fid(tmp_path, digit_sets["test"], stats, out="b.json")
    assert by_file["reference"]["stats"] == stats
    np.testing.assert_allclose(by_file["quality"]["fid"], by_folder["quality"]["fid"],
                               rtol=1e-5)
    again = run_fid(tmp_path, digit_sets["test"], stats, out="b.json")  # rounds reused
    assert again["quality"] == by_file["quality"]
    fewer = run_fid(tmp_path, digit_sets["test"], stats, "--num_images", "50", out="b.json")
    assert fewer["images"]["num_images"] == 50 and fewer["quality"] != by_file["quality"]
    assert len(os.listdir(tmp_path / "b.rounds")) == 2  # another input, another rounds folder


def test_zip_images_other_sizes_and_bad_files(tmp_path, digit_sets):
    with zipfile.ZipFile(tmp_path / "test.zip", "w") as z:
        for name in sorted(os.listdir(digit_sets["test"])):
            z.write(os.path.join(digit_sets["test"], name), name)
    a = run_fid(tmp_path, str(tmp_path / "test.zip"), digit_sets["test"], out="zip.json")
    assert abs(a["quality"]["fid"]) < 1e-6
    big = write_pngs(tmp_path / "big", np.repeat(np.repeat(digits_uint8("test", 120), 2, 1), 2, 2))
    b = run_fid(tmp_path, big, digit_sets["test"], "--image_size", "8", out="big.json")
    assert b["images"]["image_size"] == 8 and b["quality"]["fid"] < 1.0
    with open(os.path.join(digit_sets["test"], "broken.png"), "wb") as f:
        f.write(b"\x89PNG broken")
    out = str(tmp_path / "bad.json")
    assert cli.main(["fid", "--images", digit_sets["test"], "--ref", digit_sets["train"],
                     "--features", "digits", "--out", out, "--no_progress"]) == 2
    c = run_fid(tmp_path, digit_sets["test"], digit_sets["train"], "--skip_bad_files",
                out="skip.json")
    assert c["images"]["bad_files"] == ["broken.png"] and c["images"]["num_images"] == 120


def test_errors_are_one_line(tmp_path, digit_sets, capsys):
    base = ["fid", "--images", digit_sets["test"], "--no_progress", "--out", str(tmp_path / "e.json")]
    assert cli.main([*base, "--ref", str(tmp_path / "missing.npz"), "--features", "digits"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main([*base, "--ref", digit_sets["train"]]) == 2  # Inception without weights
    assert "convert-inception" in capsys.readouterr().err
    one = write_pngs(tmp_path / "one", digits_uint8("test", 1))
    assert cli.main([*base[:2], one, *base[3:], "--ref", digit_sets["train"],
                     "--features", "digits"]) == 2
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.slow
def test_inception_fid_and_stats_of_a_folder_dataset(tmp_path):
    src = tmp_path / "torch_sd.npz"
    np.savez(src, **evaluation.random_state_dict(0))
    weights = str(tmp_path / "inception_fid.npz")
    evaluation.convert_weights(str(src), weights)
    rng = np.random.default_rng(0)
    images = write_pngs(tmp_path / "imgs", rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8))
    stats = str(tmp_path / "stats.npz")
    assert cli.main(["stats", "--config", os.path.join(ROOT, "configs", "folder_ddpmpp.py"),
                     "--config.data.path", images, "--config.data.image_size=32",
                     "--config.data.random_flip=false",  # split_reader flips the train split
                     "--inception", weights, "--out", stats, "--batch_size", "3",
                     "--no_progress"]) == 0
    out = str(tmp_path / "fid.json")
    assert cli.main(["fid", "--images", images, "--ref", stats, "--inception", weights,
                     "--out", out, "--batch_size", "3", "--no_progress"]) == 0
    with open(out) as f:
        res = json.load(f)
    assert abs(res["quality"]["fid"]) < 1e-2 and res["features"] == os.path.abspath(weights)
