"""The training loop's background prefetch: batches in order, the trained-on position checkpointed,
the iterator moved back at the end, and the thread's errors raised in the loop's thread."""

from __future__ import annotations

import numpy as np
import pytest

from scoresde_jax.data import make_dataset
from scoresde_jax.training.checkpoint import Checkpointer
from scoresde_jax.training.host import chunk_sizes, Prefetcher
from helpers import TinyScoreNet, run_job, tiny_config
from test_train import _setup


def _digits(**kw):
    return make_dataset("DIGITS", batch_size=4, image_size=8, num_channels=1, **kw)


def test_chunk_sizes_end_on_multiples_of_n_jitted_steps():
    assert list(chunk_sizes(0, 7, 1)) == [1] * 7
    assert list(chunk_sizes(0, 7, 3)) == [3, 3, 1]
    assert list(chunk_sizes(4, 11, 3)) == [2, 3, 2]  # after an early stop at 4
    assert list(chunk_sizes(5, 5, 3)) == []


def test_prefetcher_hands_out_the_batches_in_order_with_their_position():
    want = _digits()
    want_batches = [next(want)["image"] for _ in range(7)]
    it = _digits()
    p = Prefetcher(it, chunk_sizes(0, 7, 3), lambda raw: [b["image"] for b in raw], depth=2)
    got, positions = [], []
    for k in (3, 3, 1):
        n, chunk = p.get()
        assert n == k == len(chunk)
        got += chunk
        positions.append(p.position["step"])
    p.close()
    assert positions == [3, 6, 7]
    for a, b in zip(got, want_batches):
        np.testing.assert_array_equal(a, b)


def test_close_moves_the_iterator_back_to_the_batches_handed_out():
    it = _digits()
    p = Prefetcher(it, chunk_sizes(0, 100, 1), lambda raw: raw, depth=3)
    p.get()
    p.get()
    p.close()  # the thread had read up to 3 batches more
    assert it.get_state()["step"] == 2
    fresh = _digits()
    third = [next(fresh) for _ in range(3)][-1]
    np.testing.assert_array_equal(next(it)["image"], third["image"])


def test_errors_of_the_thread_are_raised_by_get():
    def make(raw):
        raise ValueError("batch of 3 on this process")

    p = Prefetcher(_digits(), chunk_sizes(0, 5, 1), make)
    with pytest.raises(ValueError, match="batch of 3"):
        p.get()
    p.close()
    finite = iter([{"image": np.zeros((4, 8, 8, 1))}])
    p = Prefetcher(finite, chunk_sizes(0, 5, 1), lambda raw: raw)
    p.get()
    with pytest.raises(StopIteration):
        p.get()
    p.close()


def test_an_early_stop_checkpoints_and_leaves_the_trained_on_position(tmp_path):
    cfg = tiny_config(n_iters=8, snapshot_freq=4, snapshot_freq_for_preemption=0, eval_freq=0)
    it, eval_it = _digits(), _digits(split="test", num_epochs=None)
    cfg.training.batch_size = 4
    res = run_job("train", cfg, str(tmp_path), model=TinyScoreNet(), datasets=(it, eval_it),
                         stop_at=6, progress=False)
    assert res.step == 6
    assert it.get_state()["step"] == 6  # not the prefetched 7 or 8
    s = _setup(cfg)
    ckpt = Checkpointer(str(tmp_path))
    try:
        restored = ckpt.restore(s.abstract_state())
    finally:
        ckpt.close()
    assert restored.step == 6 and restored.data_state["step"] == 6
