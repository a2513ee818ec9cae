"""Orbax checkpoints: bit-exact round trip, keep-last-k, preemption checkpoint, clear mismatch errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.checkpoint import Checkpointer, restore_params
from scoresde_jax.optim import make_optimizer
from scoresde_jax.train_state import TrainState


def _state(width=4, seed=0):
    k = jax.random.PRNGKey(seed)
    params = {"w": jax.random.normal(k, (3, width)), "b": jnp.zeros(width)}
    return TrainState.create(params=params, tx=make_optimizer(warmup=10), rng=jax.random.PRNGKey(1), ema_rate=0.9)


def _advance(st, n):
    for _ in range(n):
        st = st.apply_gradients(jax.tree.map(lambda p: jnp.sin(p) + 0.1, st.params))
    return st


def test_roundtrip_keep_last_k_and_latest_of_both_managers(tmp_path):
    st = _state()
    with Checkpointer(str(tmp_path), max_to_keep=2) as ck:
        assert ck.restore_latest(jax.eval_shape(lambda: st)) is None
        for step in (1, 2, 3):
            st = _advance(st, 1)
            ck.save(step, st, {"step": step})
        st5 = _advance(st, 2)
        ck.save(5, st5, {"step": 5}, preemption=True)
        ck.wait()
        assert ck.snapshots.all_steps() == [2, 3]
        assert ck.preemption.all_steps() == [5]
        r = ck.restore_latest(jax.eval_shape(lambda: st5))
    assert r.step == 5 and r.data_state == {"step": 5} and r.directory.endswith("checkpoints-meta")
    for a, b in zip(jax.tree.leaves(r.state), jax.tree.leaves(st5)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    params, step = restore_params(str(tmp_path), jax.eval_shape(lambda: st5))
    assert step == 5
    np.testing.assert_array_equal(params["w"], st5.ema_params["w"])


def test_checkpoint_from_another_model_names_the_problem(tmp_path):
    with Checkpointer(str(tmp_path)) as ck:
        ck.save(1, _state(width=4), {})
        ck.wait()
        with pytest.raises(ValueError, match=r"params/w: checkpoint \(3, 4\) vs model \(3, 5\).*fresh --workdir"):
            ck.restore_latest(jax.eval_shape(lambda: _state(width=5)))


def test_restore_params_without_checkpoint_says_train_first(tmp_path):
    with pytest.raises(FileNotFoundError, match="scoresde train"):
        restore_params(str(tmp_path), jax.eval_shape(lambda: _state()))
