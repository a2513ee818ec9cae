"""Data parallelism: 8 forced CPU devices equal 1 device; two processes on 127.0.0.1 train together.

Both run in subprocesses (XLA_FLAGS and jax.distributed must be set before JAX starts).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from scoresde_jax.training import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")

PRELUDE = f"""
import json, os, sys
sys.path[:0] = [{ROOT!r}, {TESTS!r}]
import jax
jax.config.update("jax_default_matmul_precision", "highest")
import numpy as np
from scoresde_jax import training
from scoresde_jax import config as C
from scoresde_jax.training import distributed
from helpers import TinyScoreNet, run_job, tiny_config

def batches(n=3, bs=16):
    return np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (n, bs, 8, 8, 1))) * 2 - 1

def run_steps(mesh, xs, cfg=None):
    cfg = cfg or tiny_config()
    s = C.setup(cfg, model=TinyScoreNet(), mesh=mesh)
    fn = training.make_train_fn(C.get_loss_fn(cfg, s, train=True), mesh)
    st, m = fn(s.init_state(), xs)
    return st, m
"""


def _run(code: str, env_extra: dict) -> subprocess.Popen:
    env = dict(os.environ, **env_extra)
    if "XLA_FLAGS" not in env_extra:
        env.pop("XLA_FLAGS", None)
    return subprocess.Popen([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _result(p: subprocess.Popen, timeout=240) -> dict:
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


def test_eight_devices_equal_one_device():
    code = """
    xs = batches()
    assert jax.device_count() == 8
    one = distributed.make_mesh(jax.devices()[:1])
    eight = distributed.make_mesh()
    st1, m1 = run_steps(one, xs)
    gx = distributed.global_batch(xs, eight, leading=1)
    assert len(gx.sharding.device_set) == 8 and gx.addressable_shards[0].data.shape == (3, 2, 8, 8, 1)
    st8, m8 = run_steps(eight, gx)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree.leaves(st1.params), jax.tree.leaves(st8.params)))
    try:
        C.setup(tiny_config(batch_size=12), model=TinyScoreNet(), mesh=eight)
        err = ""
    except ValueError as e:
        err = str(e)
    print(json.dumps(dict(diff=diff, loss1=np.asarray(m1.loss).tolist(), loss8=np.asarray(m8.loss).tolist(),
                          replicated=st8.params["Dense_0"]["kernel"].sharding.is_fully_replicated, err=err)))
    """
    r = _result(_run(code, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}))
    np.testing.assert_allclose(r["loss8"], r["loss1"], rtol=1e-5)
    assert r["diff"] < 1e-5, r
    assert r["replicated"]
    assert "not divisible by the number of devices (8)" in r["err"] and "multiple of 8" in r["err"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("full_loop", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_two_processes_train_together_and_agree(tmp_path, full_loop):
    port = _free_port()
    code = f"""
    pid = int(os.environ["TEST_PID"])
    distributed.initialize("127.0.0.1:{port}", 2, pid)
    assert jax.process_count() == 2 and jax.device_count() == 2
    mesh = distributed.make_mesh()
    xs = batches()
    local = xs[:, pid * 8:(pid + 1) * 8]  # this host's half of every global batch
    st, m = run_steps(mesh, distributed.global_batch(local, mesh, leading=1))
    out = dict(loss=np.asarray(distributed.to_host(m.loss)).tolist(),
               kernel=np.asarray(distributed.to_host(st.params["Dense_0"]["kernel"])).tolist())
    if {full_loop}:
        # The full loop: per-host data shards, Orbax checkpoints, logs from process 0 only.
        cfg = tiny_config(n_iters=4, snapshot_freq=4, snapshot_freq_for_preemption=2, log_freq=2, eval_freq=0)
        res = run_job("train", cfg, {str(tmp_path / "run")!r}, model=TinyScoreNet(), progress=False)
        out.update(step=res.step, loop_sum=float(np.sum(distributed.to_host(res.state.params["Dense_0"]["kernel"]))))
    print(json.dumps(out))
    """
    procs = [_run(code, {"TEST_PID": str(i), "JAX_PLATFORMS": "cpu"}) for i in range(2)]
    r0, r1 = (_result(p) for p in procs)
    assert r0 == r1, "the two processes disagree"
    # The same global batches on one process and one device give the same numbers.
    from helpers import TinyScoreNet, run_job, tiny_config

    from scoresde_jax import training
    from scoresde_jax import config as C

    xs = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 8, 8, 1))) * 2 - 1
    cfg = tiny_config()
    mesh = distributed.make_mesh(jax.devices()[:1])
    s = C.setup(cfg, model=TinyScoreNet(), mesh=mesh)
    st, m = training.make_train_fn(C.get_loss_fn(cfg, s, train=True), mesh)(s.init_state(), xs)
    np.testing.assert_allclose(r0["loss"], np.asarray(m.loss), rtol=1e-5)
    np.testing.assert_allclose(r0["kernel"], np.asarray(st.params["Dense_0"]["kernel"]), atol=1e-5)
    if full_loop:
        assert r0["step"] == 4
        # One writer: one TensorBoard file, one metrics file, checkpoints at the expected steps.
        assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["4"]
        assert sum(1 for f in os.listdir(tmp_path / "run") if f.startswith("events.out")) == 1


def test_mesh_helpers_single_device():
    mesh = distributed.make_mesh(jax.devices()[:1])
    assert mesh.axis_names == ("data",)
    assert distributed.check_batch_size(8, mesh) == 8
    x = distributed.global_batch(np.ones((4, 3)), mesh)
    assert x.shape == (4, 3) and x.sharding.spec == jax.sharding.PartitionSpec("data")
    assert distributed.initialize() is False  # no multi-process request: no-op
    with pytest.raises(ValueError, match="coordinator_address"):
        distributed.initialize(num_processes=2)
