"""The eval / stats jobs: reference statistics files (official layout), the digits path end to
end (real held-out digits against the train statistics score near the floor), resumable rounds
of the one generation path (a killed and resumed eval equals an unbroken one), one-line errors
for missing files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from scoresde_jax import cli, evaluation
from scoresde_jax.data import load_digits_images
from scoresde_jax.data.spec import quantize_samples, stored_pixels
from scoresde_jax.jobs.rounds import run_rounds
from scoresde_jax.evaluation.reference import reference_from_features

from helpers import TinyScoreNet, run_job, tiny_config


@pytest.fixture(scope="module")
def digits_net():
    net, info = evaluation.feature_network("DIGITS")
    train, _ = load_digits_images("train")
    return net, reference_from_features(net(stored_pixels(train))[0])


def sample_rounds(out_dir, *, num_samples, batch_size, draw, net, progress=False):
    """The eval job's rounds: uint8 samples plus their features and logits."""
    def make_round(k, n):
        x = quantize_samples(draw(k, n))
        f, logits = net(x)
        return {"samples": x, "features": np.asarray(f, np.float32),
                "logits": np.asarray(logits, np.float32)}

    return run_rounds(out_dir, num_items=num_samples, batch_size=batch_size,
                      make_round=make_round, progress=progress)


def test_reference_file_round_trip_and_official_layout(tmp_path):
    f = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    path = evaluation.save_reference(str(tmp_path / "s.npz"), f)
    ref = evaluation.load_reference(path)
    np.testing.assert_allclose(ref.mu, f.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(ref.sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-6)
    np.savez(tmp_path / "official.npz", pool_3=f)  # score_sde's assets/stats layout
    assert evaluation.load_reference(str(tmp_path / "official.npz")).pool_3.shape == (50, 4)
    np.savez(tmp_path / "musigma.npz", mu=ref.mu, sigma=ref.sigma)
    r2 = evaluation.load_reference(str(tmp_path / "musigma.npz"))
    rep = evaluation.quality_report(f, np.zeros((50, 3)), r2)
    assert abs(rep["fid"]) < 1e-6 and rep["kid"] is None and abs(rep["inception_score"] - 1) < 1e-9
    with pytest.raises(FileNotFoundError, match="scoresde stats"):
        evaluation.load_reference(str(tmp_path / "missing.npz"))


def test_missing_inception_or_stats_is_an_error_naming_the_command(tmp_path):
    cfg = tiny_config()
    cfg.data.dataset, cfg.data.num_channels = "CIFAR10", 3
    with pytest.raises(FileNotFoundError, match="convert-inception"):
        run_job("eval", cfg, str(tmp_path), model=TinyScoreNet())
    fake = tmp_path / "inception.npz"
    fake.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="scoresde stats"):
        run_job("eval", cfg, str(tmp_path), model=TinyScoreNet(), inception_path=str(fake),
                          stats_path=str(tmp_path / "cifar10_stats.npz"))
    argv = ["eval", "--config", os.path.join(os.path.dirname(__file__), "..", "configs", "ve",
                                             "cifar10_ncsnpp_continuous.py"),
            "--workdir", str(tmp_path)]
    assert cli.main(argv) == 2


def test_held_out_digits_score_near_the_floor_against_train_statistics(tmp_path, digits_net):
    net, ref = digits_net
    test, _ = load_digits_images("test")
    arrays = sample_rounds(str(tmp_path), num_samples=len(test), batch_size=100,
                           draw=lambda k, n: test[k * 100:k * 100 + n], net=net)
    assert arrays["samples"].dtype == np.uint8 and len(arrays["features"]) == len(test)
    real = evaluation.quality_report(arrays["features"], arrays["logits"], ref)
    noise = np.random.default_rng(0).uniform(size=test.shape).astype(np.float32)
    fn, ln = net(quantize_samples(noise))
    bad = evaluation.quality_report(fn, ln, ref)
    print("held-out digits", real, "noise", bad)
    assert real["fid"] < 5 and bad["fid"] > 50 and real["inception_score"] > 8
    assert real["kid"] < 0.05 < bad["kid"]


def test_killed_and_resumed_rounds_equal_an_unbroken_run(tmp_path, digits_net):
    net, _ = digits_net
    drawn = []

    def draw(k, n):
        drawn.append(k)
        return np.random.default_rng(k).uniform(size=(n, 8, 8, 1))

    kw = dict(num_samples=23, batch_size=5, net=net, progress=False)
    full = sample_rounds(str(tmp_path / "a"), draw=draw, **kw)

    def dying(k, n):
        if k == 3:
            raise KeyboardInterrupt
        return draw(k, n)

    with pytest.raises(KeyboardInterrupt):
        sample_rounds(str(tmp_path / "b"), draw=dying, **kw)
    drawn.clear()
    resumed = sample_rounds(str(tmp_path / "b"), draw=draw, **kw)
    assert drawn == [3, 4]  # nothing recomputed
    for key in full:
        np.testing.assert_array_equal(full[key], resumed[key])


@pytest.mark.slow
def test_digits_eval_and_stats_end_to_end(tmp_path):
    cfg = tiny_config(n_iters=2, snapshot_freq=2, eval_freq=0)
    cfg.model.num_scales = 25
    wd = str(tmp_path / "wd")
    run_job("train", cfg, wd, model=TinyScoreNet(), progress=False)
    st = run_job("stats", cfg, out=str(tmp_path / "digits_stats.npz"), batch_size=100,
                 split="test", progress=False)
    with np.load(st["stats"]) as z:  # the test split: the DIGITS reference of eval
        assert z["pool_3"].shape == (360, 128) and set(z.files) == {"pool_3", "mu", "sigma"}
    kw = dict(num_samples=20, model=TinyScoreNet(), batch_size=8, progress=False)
    a = run_job("eval", cfg, wd, **kw)
    b = run_job("eval", cfg, wd, stats_path=st["stats"], **kw)  # same rounds, file reference
    assert a["quality"]["fid"] == pytest.approx(b["quality"]["fid"], rel=1e-5)
    assert a["reference"] == "DIGITS test split (360 images, held out)"
    assert b["reference"].startswith("statistics file")
    names = sorted(f for f in os.listdir(a["rounds"]) if f.startswith("round_"))
    assert names == [f"round_{k:05d}.npz" for k in range(3)]
    os.remove(os.path.join(a["rounds"], "round_00001.npz"))  # a lost round is recomputed
    c = run_job("eval", cfg, wd, **kw)
    assert c["quality"] == a["quality"] and a["step"] == 2 and a["num_samples"] == 20
    with open(os.path.join(a["rounds"], "results.json")) as f:
        res = json.load(f)
    assert res["features"] == "digits_classifier" and res["sampler"]["method"] == "pc"
    assert np.isfinite(res["quality"]["fid"]) and res["seconds_per_sample"] > 0
    d = run_job("eval", cfg, wd, method="ddim", nfe=5, **kw)  # a few-step sampler, own rounds
    assert d["nfe"] == 5 and d["sampler"]["method"] == "ddim" and d["rounds"] != a["rounds"]


@pytest.mark.slow
def test_convert_inception_cli_and_the_inception_feature_network(tmp_path):
    src = tmp_path / "torch_sd.npz"
    np.savez(src, **evaluation.random_state_dict(0))
    out = tmp_path / "inception_fid.npz"
    assert cli.main(["convert-inception", str(src), "--out", str(out)]) == 0
    net, info = evaluation.feature_network("CIFAR10", inception_path=str(out), batch_size=2)
    assert info["preprocess"] == "score_sde" and info["features"] == str(out)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    feats, logits = net(images)
    assert feats.shape == (3, 2048) and logits.shape == (3, 1008) and np.isfinite(feats).all()
    ref = evaluation.Reference(feats.mean(0), np.cov(feats.astype(np.float64), rowvar=False),
                               feats, 3)
    rep = evaluation.quality_report(feats, logits, ref)
    assert abs(rep["fid"]) < 1e-4 * np.trace(ref.sigma) + 1e-6 and rep["kid"] is not None
