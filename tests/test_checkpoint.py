"""Orbax checkpoints: bit-exact round trip, keep-last-k, preemption checkpoint, clear mismatch errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax.training.checkpoint import Checkpointer, restore_params
from scoresde_jax.training.optimizer import make_optimizer
from scoresde_jax.training.state import TrainState


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


KILL_SCRIPT = """
import os, sys
sys.path[:0] = [{root!r}, {tests!r}]
from helpers import TinyScoreNet, run_job, tiny_config
from scoresde_jax import training
from scoresde_jax import config as C

cfg = tiny_config(n_iters={n_iters}, snapshot_freq={n_iters}, snapshot_freq_for_preemption=2, log_freq=2,
                  eval_freq=0, n_jitted_steps=2)
res = run_job("train", cfg, sys.argv[1], model=TinyScoreNet(), progress=False)
import numpy as np, jax
np.savez(os.path.join(sys.argv[1], "final.npz"),
         **{{str(i): np.asarray(x) for i, x in enumerate(jax.tree.leaves((res.state.params, res.state.ema_params)))}})
"""


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_reaches_the_same_parameters(tmp_path):
    """A hard-killed run restarted from its preemption checkpoint ends where an unbroken run ends."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    n_iters = 40
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(root=root, tests=os.path.join(root, "tests"), n_iters=n_iters))
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)

    def run(workdir, kill_after_ckpt=None):
        p = subprocess.Popen([sys.executable, str(script), str(workdir)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if kill_after_ckpt is not None:
            meta = workdir / "checkpoints-meta"
            deadline = time.time() + 240
            while time.time() < deadline and p.poll() is None:
                steps = [int(d) for d in os.listdir(meta) if d.isdigit()] if meta.exists() else []
                if steps and max(steps) >= kill_after_ckpt:
                    break
                time.sleep(0.05)
            assert p.poll() is None, "the run finished before it could be killed; " + p.stderr.read()[-2000:]
            p.send_signal(signal.SIGKILL)
            p.wait()
            return p
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-4000:]
        return p

    killed = tmp_path / "killed"
    run(killed, kill_after_ckpt=6)
    assert not (killed / "final.npz").exists()
    meta_steps = [int(d) for d in os.listdir(killed / "checkpoints-meta") if d.isdigit()]
    assert 6 <= max(meta_steps) < n_iters
    run(killed)  # resumes from the preemption checkpoint
    full = tmp_path / "full"
    run(full)
    a, b = np.load(killed / "final.npz"), np.load(full / "final.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k])
