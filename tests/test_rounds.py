"""Resumable rounds (scoresde_jax.jobs.rounds): a resumed job equals an unbroken one and
recomputes only what is missing or damaged; rounds of another record are never reused."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scoresde_jax.jobs.rounds import RECORD_FILE, record_differences, round_path, run_rounds


def _make(calls):
    def make_round(k, n):
        calls.append(k)
        rng = np.random.default_rng(k)
        return {"x": rng.normal(size=(n, 3)).astype(np.float32), "k": np.full(n, k)}

    return make_round


def test_rounds_resume_with_nothing_recomputed_and_equal_results(tmp_path):
    calls = []
    full = run_rounds(str(tmp_path / "a"), num_items=10, batch_size=4, make_round=_make(calls),
                      progress=False)
    assert calls == [0, 1, 2] and full["x"].shape == (10, 3)
    assert list(full["k"]) == [0] * 4 + [1] * 4 + [2] * 2

    class Killed(Exception):
        pass

    def dies_in_round_1(k, n):
        if k == 1:
            raise Killed
        return _make([])(k, n)

    with pytest.raises(Killed):
        run_rounds(str(tmp_path / "b"), num_items=10, batch_size=4, make_round=dies_in_round_1,
                   progress=False)
    assert sorted(os.listdir(tmp_path / "b")) == ["round_00000.npz", "rounds.json"]
    calls = []
    resumed = run_rounds(str(tmp_path / "b"), num_items=10, batch_size=4, make_round=_make(calls),
                         progress=False)
    assert calls == [1, 2]
    np.testing.assert_array_equal(resumed["x"], full["x"])


def test_damaged_round_is_recomputed(tmp_path):
    run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make([]), progress=False)
    with open(round_path(str(tmp_path), 1), "r+b") as f:
        f.truncate(40)
    calls = []
    out = run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make(calls),
                     progress=False)
    assert calls == [1] and out["x"].shape == (8, 3)
    with pytest.raises(ValueError, match="num_items"):
        run_rounds(str(tmp_path), num_items=0, batch_size=4, make_round=_make([]))


def test_rounds_of_another_record_are_refused_or_overwritten(tmp_path):
    rec = {"config": {"sampling": {"corrector": "none"}}, "seed": 0}
    run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make([]), record=rec,
               progress=False)
    other = {"config": {"sampling": {"corrector": "langevin"}}, "seed": 0}
    assert record_differences(rec, other) == ["config.sampling.corrector"]
    with pytest.raises(ValueError, match=r"differs in config.sampling.corrector.*--overwrite"):
        run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make([]), record=other)
    calls = []
    run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make(calls), record=other,
               overwrite=True, progress=False)
    assert calls == [0, 1]
    calls = []
    run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make(calls), record=other,
               progress=False)
    assert calls == []  # the same record: reused


def test_rounds_of_the_wrong_shape_dtype_or_nan_are_recomputed(tmp_path):
    run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make([]), progress=False)
    np.savez(round_path(str(tmp_path), 0), x=np.zeros((4, 5), np.float32), k=np.zeros(4, int))
    np.savez(round_path(str(tmp_path), 1), x=np.full((4, 3), np.nan, np.float32),
             k=np.zeros(4, int))
    calls = []
    out = run_rounds(str(tmp_path), num_items=8, batch_size=4, make_round=_make(calls),
                     progress=False)
    assert calls == [0, 1] and np.isfinite(out["x"]).all()
    assert os.path.exists(tmp_path / RECORD_FILE)


def test_a_run_that_computes_nothing_leaves_nothing(tmp_path):
    def refuses(k, n):
        raise ValueError("bad option")

    with pytest.raises(ValueError):
        run_rounds(str(tmp_path / "r"), num_items=4, batch_size=4, make_round=refuses)
    assert not (tmp_path / "r").exists()
