"""Resumable rounds (scoresde_jax.jobs.rounds): a resumed job equals an unbroken one and
recomputes only what is missing or damaged."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scoresde_jax.jobs.rounds import round_path, run_rounds


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
    assert sorted(os.listdir(tmp_path / "b")) == ["round_00000.npz"]
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
