"""Compilation: the train step, the eval step and the snapshot sampler compile once per run (across
log, eval, snapshot and preemption steps, an early stop and a resume; a new run compiles its step
beside the init, a resumed one at its first dispatch), and a restarted CLI run loads the train step
from the persistent compilation cache instead of compiling it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scoresde_jax import config as C
from scoresde_jax.jobs.generate import make_generator
from scoresde_jax.training import make_eval_fn, make_train_fn, train_loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _toy_config(n_iters: int):
    cfg = C.load_config("configs/toy_8gaussians.py")
    t = cfg.training
    t.batch_size, t.n_iters, t.n_jitted_steps, t.log_freq = 64, n_iters, 1, 2
    t.eval_freq, t.snapshot_freq, t.snapshot_freq_for_preemption = 4, 6, 3
    t.snapshot_sampling, t.snapshot_num_samples = True, 16
    cfg.eval.batch_size = 64
    cfg.model.num_scales = 25  # a 25-step snapshot sampler
    cfg.model.hidden_sizes = (32, 32)
    return cfg


def test_train_eval_and_sample_steps_compile_once_across_snapshots_and_resume(tmp_path):
    cfg = _toy_config(12)
    s = C.setup(cfg)
    train_fn = make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh)
    eval_fn = make_eval_fn(C.get_loss_fn(cfg, s, train=False), s.mesh)
    gen = make_generator(s, C.sampler_spec(cfg), batch_size=cfg.training.snapshot_num_samples)

    def sample_fn(params, rng):  # what the train job hands to the loop
        return gen.from_rng(params, rng)[0]

    def run(stop_at):
        return train_loop(
            str(tmp_path), train_fn=train_fn, eval_fn=eval_fn, sample_fn=sample_fn,
            init_state=s.init_state, abstract_state=s.abstract_state(),
            train_iter=C.get_dataset(cfg, split="train"),
            eval_iter=C.get_dataset(cfg, split="test", num_epochs=None), mesh=s.mesh,
            options=C.loop_options(cfg), batch_size=64, preprocess=C.get_data_scaler(cfg),
            stop_at=stop_at, progress=False)

    first = run(7)  # logs, an eval, a snapshot with samples, preemption saves, an early stop
    assert first.step == 7
    # a new run compiles its step in a second thread while the init runs, and uses that program
    assert train_fn._cache_size() == 0
    second = run(None)  # resumes from the preemption checkpoint at step 7 and finishes
    assert second.step == 12
    assert train_fn._cache_size() == 1
    assert eval_fn._cache_size() == 1
    assert gen.jitted._cache_size() == 1


_CHILD = r"""
import json, logging, sys
sys.path.insert(0, {root!r})
records = []

class Grab(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())

compiler = logging.getLogger("jax._src.compiler")
compiler.setLevel(logging.DEBUG)
compiler.addHandler(Grab())
from scoresde_jax import cli
rc = cli.main({argv!r})
hits = [m for m in records if "cache hit" in m and "multi_step" in m]
misses = [m for m in records if "CACHE MISS" in m and "multi_step" in m]
compiled = sorted({{m.split("'")[1] for m in records if "CACHE MISS" in m}})
print(json.dumps(dict(rc=rc, hits=len(hits), misses=len(misses), compiled=compiled)))
"""


def _cli_train(workdir, cache, n_iters):
    argv = ["train", "--config", "configs/toy_8gaussians.py", "--workdir", str(workdir),
            "--no_evaluate", "--no_progress", "--compilation_cache", str(cache),
            f"--config.training.n_iters={n_iters}", "--config.training.batch_size=64",
            "--config.training.log_freq=2", "--config.training.eval_freq=0",
            "--config.training.snapshot_freq=4", "--config.training.snapshot_freq_for_preemption=2",
            "--config.training.snapshot_sampling=False"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for name in ("XLA_FLAGS", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        env.pop(name, None)
    r = subprocess.run([sys.executable, "-c", _CHILD.format(root=ROOT, argv=argv)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_restarted_cli_run_loads_the_train_step_from_the_compilation_cache(tmp_path):
    """The CLI's cache keeps every program (however short its compile): the second run compiles
    none, the train step included (compiled beside the init by the first, jitted by the second)."""
    cache, workdir = tmp_path / "xla", tmp_path / "run"
    first = _cli_train(workdir, cache, 4)
    assert (first["rc"], first["hits"], first["misses"]) == (0, 0, 1)
    assert "jit_multi_step" in first["compiled"] and any(cache.iterdir())
    second = _cli_train(workdir, cache, 8)  # resumes at step 4
    assert second == {"rc": 0, "hits": 1, "misses": 0, "compiled": []}


class _FakeStep:
    """A stand-in for the jitted train step that records when it is traced and compiled."""

    def __init__(self, events):
        self.events = events

    def lower(self, state, batches):
        self.events.append("step traced")
        return self

    def compile(self):
        self.events.append("step compiled")
        return lambda state, batches: ("compiled", state)

    def __call__(self, state, batches):
        return ("jit", state)


def test_a_new_run_traces_its_step_once_the_init_is_traced_and_calls_the_compiled_step():
    """The step's Python tracing waits for the init's (they would take turns at Python's lock)
    and runs while XLA compiles the init; an init without ``on_lowered`` starts it at once; an
    init that fails releases the thread."""
    import numpy as np
    import pytest

    from scoresde_jax.training.loop import _init_while_compiling

    events = []
    batches = np.zeros((1, 4, 2), np.float32)

    def init_state(*, on_lowered):
        events.append("init traced")
        on_lowered()
        events.append("init compiled")
        return "state"

    state, call = _init_while_compiling(init_state, _FakeStep(events), None, batches)
    assert state == "state" and events.index("step traced") > events.index("init traced")
    assert events[-1] == "step compiled"
    assert call("s", batches) == ("compiled", "s")  # the thread's executable for this shape
    assert call("s", np.zeros((1, 2, 2), np.float32)) == ("jit", "s")  # the jit for others

    events.clear()
    state, call = _init_while_compiling(lambda: "plain", _FakeStep(events), None, batches)
    assert state == "plain" and events == ["step traced", "step compiled"]

    def failing(*, on_lowered):
        raise RuntimeError("no init")

    with pytest.raises(RuntimeError, match="no init"):
        _init_while_compiling(failing, _FakeStep([]), None, batches)
