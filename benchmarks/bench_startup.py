"""Where the time goes before the first result: import, setup, init, train-step trace and compile,
first and steady step, checkpoint save, and the first sampling round, for the demo (digits
DDPM++) and NCSN++ CIFAR-10, with a cold and then a warm persistent compilation cache.

    .venv/bin/python benchmarks/bench_startup.py [--configs digits_ddpmpp ve/cifar10_ncsnpp_continuous]
        [--batch 64 8] [--out benchmarks/results/bench_startup_<platform>.json]

Each (config, cache) cell runs in a fresh process (as a user's run would). A cell times, in order:

* ``import_s``: importing JAX and the library; ``setup_s``: the config to a :class:`Setup`;
* ``first_step_s``: what a new training run waits for before its first step ends, measured three
  ways, one per change of issue 24 (each a row of the table):

  - ``baseline``: the init program compiled with XLA's default options, then the train step traced
    and compiled, one after the other (the library before the change);
  - ``init_O1``: the init program compiled with LLVM at level 1
    (``training.distributed.compiler_options``);
  - ``step_O1``: the train step compiled with those options too;
  - ``init_small``: the init of a model of up to 8M parameters compiled at LLVM level 0
    (``training.distributed.init_compiler_options``);
  - ``overlap``: all of these, the train step traced (once the init is traced) and compiled in
    a second thread while XLA compiles and runs the init (what ``train_loop`` does now,
    ``_init_while_compiling``, through ``training.state.init_state(on_lowered=...)``);

  each with its parts (``init_s``, ``step_trace_s``, ``step_compile_s``; in the overlap row the
  step's parts run beside the init), each in its own process without a persistent cache; then
  the overlap cell again with an empty cache (``cold``) and with that cache filled (``warm``:
  what a second run of the same config waits for);
* ``step_s``: the median steady step; ``save_s``: one checkpoint written and committed;
* ``sample_trace_s`` / ``sample_compile_s`` / ``sample_s``: the first sampling round of the
  ``sample`` job (:func:`scoresde_jax.jobs.generate.make_generator`) with the config's sampler
  (digits; 16 images) or UniPC at 10 NFE (CIFAR-10, 2 images: its 1000-step PC round takes
  minutes on a CPU);
* ``programs_compiled``: the XLA programs the cell compiled (persistent-cache misses; 0 when
  everything came from the cache).

Compile times move by 20-40 % from process to process on a shared VM, so one more cell per
config (``way = step_options``) compares the train step's compiler options inside one process:
it compiles a fresh train function with XLA's defaults, with
``training.distributed.compiler_options`` and with each ``--step_options NAME=JSON`` set,
alternating, ``--repeats`` times each (wall and CPU seconds; the CPU time is less disturbed by
other tenants), times each executable's first call, then alternates the executables step by step
(median wall and CPU seconds of ``--ab_steps`` steps each).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIGS = ["digits_ddpmpp", "ve/cifar10_ncsnpp_continuous"]
# cell name -> (way, cache state, cache folder): the baseline .. step_O1 cells run without a
# cache (each compiles everything); the overlap cell fills an empty cache, the warm cell reuses it
WAYS = {"baseline": ("baseline", "none", "none"), "init_O1": ("init_O1", "none", "none"),
        "step_O1": ("step_O1", "none", "none"), "init_small": ("init_small", "none", "none"),
        "overlap": ("overlap", "none", "none"), "cold": ("overlap", "cold", "cache"),
        "warm": ("overlap", "warm", "cache"), "step_options": ("step_options", "none", "none")}

CELL = r"""
import json, os, sys, tempfile, threading, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
import jax, numpy as np
from scoresde_jax import config as C, training
from scoresde_jax.jobs.generate import image_keys, make_generator
from scoresde_jax.runner import setup_compilation_cache
from scoresde_jax.training import Checkpointer, distributed
from scoresde_jax.training.state import create_train_state, init_state
row = dict(import_s=time.perf_counter() - t0)
setup_compilation_cache({cache!r})
misses = []
jax.monitoring.register_event_listener(
    lambda name, **kw: misses.append(name) if name.endswith("cache_misses") else None)
t = time.perf_counter()
cfg = C.load_config({config!r})
cfg.training.batch_size = {batch}
cfg.training.n_jitted_steps = 1
s = C.setup(cfg)
row["setup_s"] = time.perf_counter() - t
key = jax.random.PRNGKey(0)
abstract = s.abstract_state()

def init_program():
    create = lambda k: create_train_state(k, s.model, s.tx, input_shape=s.input_shape[:0] + (1,) +
                                          tuple(s.input_shape[1:]), ema_rate=s.ema_rate)
    return jax.jit(create, out_shardings=distributed.replicated(s.mesh))

x = np.random.default_rng(0).uniform(-1, 1, (1, {batch}) + tuple(s.input_shape[1:])).astype(np.float32)
batch = distributed.global_batch(x, s.mesh, leading=1)

way = {way!r}
def step_program():  # a new train function each time: nothing cached in memory
    return training.make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh,
                                  compiler_options={{}} if way in ("baseline", "init_O1") else None)

def init(options):
    t = time.perf_counter()
    lowered = init_program().lower(key)
    if options is None:  # the library's choice for the model's size
        n = sum(x.size for x in jax.tree.leaves(lowered.out_info.params))
        options = distributed.init_compiler_options(s.mesh, n)
    state = lowered.compile(options)(key)
    jax.block_until_ready(state)
    return state, time.perf_counter() - t


def init_shipped(on_lowered):  # what the train loop calls: the library's init_state
    t = time.perf_counter()
    state = init_state(key, s.model, s.tx, example_shape=tuple(s.input_shape[1:]),
                       ema_rate=s.ema_rate, mesh=s.mesh, on_lowered=on_lowered)
    jax.block_until_ready(state)
    return state, time.perf_counter() - t

def compile_step(out):
    t = time.perf_counter(); lowered = step_program().lower(abstract, batch)
    out["step_trace_s"] = time.perf_counter() - t
    t = time.perf_counter(); out["compiled"] = lowered.compile()
    out["step_compile_s"] = time.perf_counter() - t

def first_step(compiled, state):
    t = time.perf_counter(); state, m = compiled(state, batch); jax.block_until_ready(m)
    return state, time.perf_counter() - t

t = time.perf_counter(); part = {{}}
if way == "overlap":  # the step traced once the init is traced, compiled beside the init
    traced = threading.Event()
    thread = threading.Thread(target=lambda: (traced.wait(), compile_step(part))); thread.start()
    state, part["init_s"] = init_shipped(traced.set); thread.join()
else:
    state, part["init_s"] = init({{}} if way == "baseline" else None if way == "init_small"
                                 else distributed.compiler_options(s.mesh))
    compile_step(part)
state, part["step_run_s"] = first_step(part.pop("compiled"), state)
part["first_step_s"] = time.perf_counter() - t
row.update(part, way=way)
fn = step_program()
state, m = fn(state, batch); jax.block_until_ready(m)
times = []
for _ in range({steps}):
    t = time.perf_counter(); state, m = fn(state, batch); jax.block_until_ready(m)
    times.append(time.perf_counter() - t)
row["step_s"] = float(np.median(times))
with tempfile.TemporaryDirectory() as d:
    ckpt = Checkpointer(d)
    t = time.perf_counter(); ckpt.save(1, state); ckpt.wait(); row["save_s"] = time.perf_counter() - t
    ckpt.close()
method, nfe, n = {sampler}
spec = C.sampler_spec(cfg, method, nfe)
gen = make_generator(s, spec, batch_size=n)
args = gen.args(state.ema_params, image_keys(seed=0, ids=range(n)))
t = time.perf_counter(); lowered = gen.jitted.trace(*args).lower()
row["sample_trace_s"] = time.perf_counter() - t
t = time.perf_counter(); compiled = lowered.compile(); row["sample_compile_s"] = time.perf_counter() - t
t = time.perf_counter(); jax.block_until_ready(compiled(*args)); row["sample_s"] = time.perf_counter() - t
row.update(sampler=spec.method, nfe=nfe, sample_images=n, programs_compiled=len(misses),
           params=int(sum(p.size for p in jax.tree.leaves(state.params))))
print(json.dumps(row))
"""

# The train step's compiler options compared inside one process (see the module docstring).
CELL_AB = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import jax, numpy as np
jax.config.update("jax_enable_compilation_cache", False)
from scoresde_jax import config as C, training
from scoresde_jax.training import distributed
cfg = C.load_config({config!r})
cfg.training.batch_size = {batch}
cfg.training.n_jitted_steps = 1
s = C.setup(cfg)
x = np.random.default_rng(0).uniform(-1, 1, (1, {batch}) + tuple(s.input_shape[1:])).astype(np.float32)
batch = distributed.global_batch(x, s.mesh, leading=1)
ways = dict(default={{}}, library=distributed.compiler_options(s.mesh), **{extra!r})
row = dict(way="step_options", options=ways["library"])
compiled = {{}}
for r in range({repeats}):
    for name, options in ways.items():
        fn = training.make_train_fn(C.get_loss_fn(cfg, s, train=True), s.mesh, donate=False,
                                    compiler_options=options)
        lowered = fn.lower(s.abstract_state(), batch)
        w, c = time.perf_counter(), time.process_time()
        compiled[name] = lowered.compile()
        row.setdefault(name + "_compile_s", []).append(time.perf_counter() - w)
        row.setdefault(name + "_compile_cpu_s", []).append(time.process_time() - c)
state = s.init_state()
for name in ways:  # the first call of each executable (XNNPACK builds its pipelines there)
    w = time.perf_counter()
    jax.block_until_ready(compiled[name](state, batch))
    row[name + "_first_call_s"] = time.perf_counter() - w
wall, cpu = {{n: [] for n in ways}}, {{n: [] for n in ways}}
for _ in range({steps}):
    for name in ways:
        w, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled[name](state, batch))
        wall[name].append(time.perf_counter() - w); cpu[name].append(time.process_time() - c)
for name in ways:
    row[name + "_step_s"] = float(np.median(wall[name]))
    row[name + "_step_cpu_s"] = float(np.median(cpu[name]))
print(json.dumps(row))
"""


def run_cell(config: str, batch: int, cache: str, way: str, steps: int, timeout: int,
             repeats: int = 3, extra: dict | None = None) -> dict:
    path = config if config.endswith(".py") else os.path.join("configs", config + ".py")
    sampler = (None, None, 16) if "digits" in config else ("unipc", 10, 2)
    cell = CELL_AB if way == "step_options" else CELL
    code = cell.format(root=ROOT, config=path, batch=batch, cache=cache, way=way, steps=steps,
                       sampler=repr(sampler), repeats=repeats, extra=dict(extra or {}))
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
    env.pop("XLA_FLAGS", None)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        return dict(config=config, error=r.stderr.strip().splitlines()[-1])
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row.update(config=config, batch=batch, process_s=time.perf_counter() - t0)
    return row


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--batch", nargs="+", type=int, default=[64, 8],
                   help="training batch per config (in order; the last repeats)")
    p.add_argument("--steps", type=int, default=5, help="steady steps timed")
    p.add_argument("--repeats", type=int, default=3,
                   help="compiles per option in the step_options cell")
    p.add_argument("--ab_steps", type=int, default=20,
                   help="steps per option in the step_options cell")
    p.add_argument("--step_options", nargs="*", default=[], metavar="NAME=JSON",
                   help="more option sets for the step_options cell, e.g. "
                        "'no_ynn={\"xla_backend_optimization_level\": 1, "
                        "\"xla_cpu_experimental_ynn_fusion_type\": \"\"}'")
    p.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS),
                   help="the cells to run (default all)")
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", default=None, help="default results/bench_startup_<platform>.json")
    args = p.parse_args(argv)
    extra = {}
    for item in args.step_options:
        name, sep, options = item.partition("=")
        if not sep or name in ("default", "library"):
            p.error(f"--step_options takes NAME=JSON with a new NAME, got {item!r}")
        extra[name] = json.loads(options)
    rows = []
    for i, config in enumerate(args.configs):
        batch = args.batch[min(i, len(args.batch) - 1)]
        with tempfile.TemporaryDirectory() as cache:
            for name in args.ways:
                way, state, where = WAYS[name]
                where = cache if where == "cache" else where
                steps = args.ab_steps if way == "step_options" else args.steps
                row = run_cell(config, batch, where, way, steps, args.timeout, args.repeats,
                               extra)
                row["cache"] = state
                rows.append(row)
                print(json.dumps(row), flush=True)
    _print_table(rows)
    _print_options(rows)
    sys.path.insert(0, ROOT)
    from benchmarks.common import write_results

    write_results("bench_startup", rows, note=(
        "seconds per phase in a fresh process; 'way' = how the init and the train step compile "
        "for the baseline / init_O1 / step_O1 / init_small / overlap change; cold = empty persistent cache, "
        "warm = the same cache again; step_options = the train step's XLA defaults against the "
        "library's options in one process (compiles alternated, then steps alternated)"),
        out=args.out)
    return rows


def _print_table(rows: list[dict]) -> None:
    print("| config | change | cache | import | setup | init | step trace | step compile | "
          "first step done | steady step | save | sample trace / compile / run | programs "
          "compiled |")
    print("|" + "---|" * 13)
    for r in rows:
        if r.get("way") == "step_options":
            continue
        if "error" in r:
            print(f"| {r['config']} | {r.get('cache')} | error: {r['error']} |")
            continue
        print(f"| {r['config']} | {r['way']} | {r['cache']} | {r['import_s']:.1f} | "
              f"{r['setup_s']:.1f} | {r['init_s']:.1f} | {r['step_trace_s']:.1f} | "
              f"{r['step_compile_s']:.1f} | **{r['first_step_s']:.1f}** | {r['step_s']:.3f} | "
              f"{r['save_s']:.2f} | {r['sample_trace_s']:.1f} / {r['sample_compile_s']:.1f} / "
              f"{r['sample_s']:.1f} | {r['programs_compiled']} |")


def _print_options(rows: list[dict]) -> None:
    rows = [r for r in rows if r.get("way") == "step_options" and "error" not in r]
    if not rows:
        return
    print("\n| config | train step compiled with | compile wall s (each) | compile CPU s "
          "(median) | first call s | step wall s | step CPU s |")
    print("|" + "---|" * 7)
    for r in rows:
        names = [k[:-len("_step_s")] for k in r if k.endswith("_step_s")]
        for name in names:
            label = ("XLA defaults" if name == "default" else
                     f"library {r['options']}" if name == "library" else name)
            walls = " / ".join(f"{v:.1f}" for v in r[name + "_compile_s"])
            cpu = sorted(r[name + "_compile_cpu_s"])[len(r[name + "_compile_cpu_s"]) // 2]
            first = r.get(name + "_first_call_s")
            print(f"| {r['config']} | {label} | {walls} | {cpu:.1f} | "
                  f"{'-' if first is None else f'{first:.2f}'} | "
                  f"{r[name + '_step_s']:.3f} | {r[name + '_step_cpu_s']:.3f} |")


if __name__ == "__main__":
    main()
