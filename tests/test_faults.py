"""Fault injection in training runs: signals (one and two processes), two runs on one workdir,
damaged checkpoints, non-finite states.  Bad input (config overrides, CLI arguments, the pure
sampler and likelihood API) is in test_faults_input.py."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde_jax import training
from scoresde_jax import config as C
from scoresde_jax.metrics_io import read_metrics
from scoresde_jax.training import distributed
from scoresde_jax.training.checkpoint import Checkpointer, restore_params
from scoresde_jax.training.host import PREFETCH
from scoresde_jax.training.workdir import WorkdirLock, drop_replayed_metrics
from helpers import TinyScoreNet, run_job, tiny_config


def _cfg(**kw):
    base = dict(n_iters=8, snapshot_freq=4, snapshot_freq_for_preemption=0, log_freq=1,
                eval_freq=0)
    base.update(kw)
    return tiny_config(**base)


class _Signalling:
    """A data iterator that sends ``signum`` to this process when batch ``at`` is drawn.

    The loop reads batches up to ``PREFETCH`` dispatches ahead (in a thread), so the signal
    arrives while one of steps ``at - PREFETCH - 1 .. at`` runs (the queue holds PREFETCH, the
    thread one more): the run stops after that step.
    """

    def __init__(self, it, at, signum):
        self.it, self.at, self.signum, self.k = it, at, signum, 0

    def __next__(self):
        b = next(self.it)
        self.k += 1
        if self.k == self.at:
            os.kill(os.getpid(), self.signum)
        return b

    def get_state(self):
        return self.it.get_state()

    def set_state(self, s):
        self.it.set_state(s)


def _data(cfg, at=None, signum=signal.SIGTERM):
    tr = C.get_dataset(cfg, split="train")
    ev = C.get_dataset(cfg, split="test", num_epochs=None)
    return (tr if at is None else _Signalling(tr, at, signum)), ev


def _train(cfg, workdir, **kw):
    return run_job("train", cfg, str(workdir), model=TinyScoreNet(), progress=False, **kw)


def _equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- signals ---------------------------------------------------------------------------------

def test_sigterm_at_a_random_step_saves_and_resume_is_bit_identical(tmp_path):
    cfg = _cfg()
    at = random.Random(os.getpid()).randint(1, 7)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(training.Preempted) as e:
        _train(cfg, tmp_path / "cut", datasets=_data(cfg, at))
    cut = e.value.step
    assert max(1, at - PREFETCH - 1) <= cut <= at and e.value.exit_code == 0
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored after the loop
    assert str(cut) in os.listdir(tmp_path / "cut" / ("checkpoints" if cut == 4 else
                                                      "checkpoints-meta"))
    resumed = _train(cfg, tmp_path / "cut")
    full = _train(cfg, tmp_path / "full")
    assert resumed.step == full.step == 8
    _equal(resumed.state, full.state)
    steps = [r["step"] for r in read_metrics(str(tmp_path / "cut" / "metrics.jsonl"))]
    assert steps == sorted(set(steps)) == list(range(1, 9))  # no duplicates after the restart


def test_sigint_saves_then_exits_130(tmp_path):
    cfg = _cfg(n_iters=4)
    with pytest.raises(training.Preempted) as e:
        _train(cfg, tmp_path, datasets=_data(cfg, 2, signal.SIGINT))
    assert e.value.step in (1, 2) and e.value.exit_code == 130
    assert os.listdir(tmp_path / "checkpoints-meta") == [str(e.value.step)]


# --- workdir lock and hygiene ------------------------------------------------------------------

def test_a_second_run_on_a_busy_workdir_names_the_holder(tmp_path):
    with WorkdirLock(str(tmp_path)):
        with pytest.raises(training.WorkdirBusyError,
                           match=rf"process {os.getpid()} on host {socket.gethostname()}"):
            _train(_cfg(n_iters=1), tmp_path)
    assert not (tmp_path / ".lock").exists()


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 12345,
                                                "host": socket.gethostname()}))
    with caplog.at_level(logging.WARNING), WorkdirLock(str(tmp_path)) as lock:
        assert lock.held
    assert "stale lock" in caplog.text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir with one training step (shared by the workdir-hygiene tests)."""
    cfg = _cfg(n_iters=1, snapshot_freq=1)
    workdir = tmp_path_factory.mktemp("trained")
    _train(cfg, workdir)
    return cfg, workdir


def test_config_json_is_used_and_differences_warned(trained):
    cfg, tmp_path = trained
    saved = C.config_for_workdir(None, str(tmp_path))
    assert saved.training.batch_size == cfg.training.batch_size
    assert saved.model.num_scales == cfg.model.num_scales
    other = C.saved_config(str(tmp_path))
    other.data.centered = False
    assert C.config_differences(saved, other) == ["data.centered: True (trained) vs False (given)"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        C.config_for_workdir(None, str(tmp_path / "missing"))


def test_metrics_rows_after_the_resumed_step_are_dropped(tmp_path):
    rows = [{"step": s, "train/loss": 1.0} for s in (1, 2, 3, 4, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"st')
    assert drop_replayed_metrics(str(tmp_path), 2) == 4
    assert [r["step"] for r in read_metrics(str(tmp_path / "metrics.jsonl"))] == [1, 2]


def test_sample_and_convert_refuse_bad_workdirs(trained):
    cfg, tmp_path = trained
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_job("sample", cfg, str(tmp_path / "missing"), model=TinyScoreNet())
    with pytest.raises(ValueError, match="num_samples"):
        run_job("sample", cfg, str(tmp_path), num_samples=0, model=TinyScoreNet())
    with pytest.raises(ValueError, match="already has checkpoints.*--overwrite"):
        run_job("convert", cfg, str(tmp_path), checkpoint=str(tmp_path / "official"),
                model=TinyScoreNet())


# --- damaged checkpoints ---------------------------------------------------------------------

def _two_steps(tmp_path):
    s = C.setup(_cfg(), model=TinyScoreNet(), mesh=distributed.make_mesh(jax.devices()[:1]))
    st = s.init_state()
    with Checkpointer(str(tmp_path), async_save=False) as ck:
        ck.save(4, st.replace(step=st.step + 4), {})
        ck.save(8, st.replace(step=st.step + 8, ema_params=jax.tree.map(lambda x: x + 1,
                                                                         st.ema_params)), {})
    return s, tmp_path / "checkpoints" / "8"


def _data_files(step_dir):
    return [os.path.join(d, f) for d, _, fs in os.walk(step_dir / "state") for f in fs
            if os.sep + "d" + os.sep in os.path.join(d, f) + os.sep and os.path.getsize(
                os.path.join(d, f)) > 64]


def _truncate(step_dir):
    for f in _data_files(step_dir):
        with open(f, "r+b") as fh:
            fh.truncate(os.path.getsize(f) // 2)


def _remove_metadata(step_dir):
    os.remove(step_dir / "state" / "_METADATA")


def _empty(step_dir):
    for name in os.listdir(step_dir):
        p = step_dir / name
        shutil.rmtree(p) if p.is_dir() else os.remove(p)


def _flip(step_dir):
    for f in _data_files(step_dir):
        with open(f, "r+b") as fh:
            data = bytearray(fh.read())
            k = len(data) // 2
            data[k:k + 64] = bytes(b ^ 0xFF for b in data[k:k + 64])
            fh.seek(0)
            fh.write(data)


@pytest.mark.parametrize("damage", [_truncate, _remove_metadata, _empty, _flip])
def test_a_damaged_latest_step_is_named_and_the_newest_good_one_used(tmp_path, caplog, damage):
    s, latest = _two_steps(tmp_path)
    damage(latest)
    with caplog.at_level(logging.WARNING):
        params, step = restore_params(str(tmp_path), s.abstract_state())
    assert step == 4
    assert f"{tmp_path}/checkpoints/8" in caplog.text and "newest good checkpoint, step 4" in caplog.text
    with pytest.raises(training.CheckpointError, match="checkpoints/8"):
        restore_params(str(tmp_path), s.abstract_state(), step=8)
    with pytest.raises(training.CheckpointError, match=r"available steps: \[4, 8\]"):
        restore_params(str(tmp_path), s.abstract_state(), step=5)


@pytest.mark.slow
def test_training_resumes_from_the_newest_good_step_and_rewrites_the_damaged_one(tmp_path):
    cfg = _cfg(n_iters=8, snapshot_freq=4)
    full = _train(cfg, tmp_path / "full")
    _train(cfg, tmp_path / "run", stop_at=8)
    _flip(tmp_path / "run" / "checkpoints" / "8")
    again = _train(cfg, tmp_path / "run")
    assert again.step == 8
    _equal(again.state.params, full.state.params)
    assert os.listdir(tmp_path / "run" / "checkpoints-damaged")


# --- non-finite states -----------------------------------------------------------------------

def test_a_non_finite_state_is_never_saved_or_called_good(tmp_path):
    s = C.setup(_cfg(), model=TinyScoreNet(), mesh=distributed.make_mesh(jax.devices()[:1]))
    st = s.init_state()
    bad = st.replace(ema_params=jax.tree.map(lambda x: x * jnp.nan, st.ema_params))
    with Checkpointer(str(tmp_path), async_save=False) as ck:
        ck.save(2, st, {})
        with pytest.raises(training.NonFiniteStateError, match="ema_params"):
            ck.save(4, bad, {})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


# --- signals across processes -----------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_agree_on_the_preemption_step(tmp_path):
    """SIGTERM reaches only process 1; both processes save at the same step and stop (agreeing
    through the coordination service, without a device all-gather)."""
    import subprocess
    import sys
    import textwrap

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = textwrap.dedent(f"""
    import json, os, signal, sys
    sys.path[:0] = [{root!r}, {os.path.join(root, "tests")!r}]
    import jax
    from scoresde_jax import training
    from scoresde_jax import config as C
    from scoresde_jax.training import distributed
    from helpers import TinyScoreNet, run_job, tiny_config
    pid = int(os.environ["TEST_PID"])

    class _Signalling:  # as in test_faults (importing it would start JAX before initialize)
        def __init__(self, it, at, signum):
            self.it, self.at, self.signum, self.k = it, at, signum, 0

        def __next__(self):
            self.k += 1
            if self.k == self.at:
                os.kill(os.getpid(), self.signum)
            return next(self.it)

        def get_state(self):
            return self.it.get_state()

    distributed.initialize("127.0.0.1:{port}", 2, pid)
    import types
    from scoresde_jax.training import host as host_lib

    def _no_device_collective(*a, **k):  # the stop flag goes through the coordination service
        raise AssertionError("process_allgather: a per-step device sync")

    host_lib.multihost_utils = types.SimpleNamespace(process_allgather=_no_device_collective)
    cfg = tiny_config(n_iters=8, snapshot_freq=8, snapshot_freq_for_preemption=0, log_freq=1,
                      eval_freq=0)
    kw = dict(shard=(pid, 2))
    tr = C.get_dataset(cfg, split="train", **kw)
    ev = C.get_dataset(cfg, split="test", num_epochs=None, **kw)
    if pid == 1:
        tr = _Signalling(tr, 3, signal.SIGTERM)
    try:
        run_job("train", cfg, {str(tmp_path / "run")!r}, model=TinyScoreNet(), progress=False,
                       datasets=(tr, ev))
        print(json.dumps(dict(step=None)))
    except training.Preempted as e:
        print(json.dumps(dict(step=e.step, code=e.exit_code)))
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", code], env=dict(env, TEST_PID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root)
             for i in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=400)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0] == results[1] and results[0]["code"] == 0
    assert results[0]["step"] in (1, 2, 3)  # the signal comes with batch 3, read ahead
    assert os.listdir(tmp_path / "run" / "checkpoints-meta") == [str(results[0]["step"])]


def test_a_lost_checksum_file_is_damage_not_an_old_format(tmp_path):
    """Issue 21: with its checksum file deleted and bytes flipped, a step is not restored
    unverified; the newest step with its checksums is used instead."""
    cfg = _cfg(n_iters=4, snapshot_freq=2, eval_freq=0)
    _train(cfg, tmp_path)
    sums = tmp_path / "checkpoints-checksums"
    newest = sorted(sums.iterdir())[-1]
    assert newest.name.endswith("_4.json")
    newest.unlink()
    s = C.setup(cfg, model=TinyScoreNet(), mesh=distributed.make_mesh(jax.devices()[:1]))
    params, step = training.restore_params(str(tmp_path), s.abstract_state())
    assert step == 2
