"""Class accuracy and FID against the guidance scale on digits: classifier-free guidance of a
class-conditional model and classifier guidance with a noise-conditional classifier.

Needs two trained workdirs (about 10 minutes each on 2 idle CPU cores)::

    scoresde train --config configs/digits_conditional.py --workdir runs/digits_cond --no_evaluate
    scoresde train --config configs/digits_classifier.py --workdir runs/digits_clf --no_evaluate
    .venv/bin/python benchmarks/bench_guidance.py --cond runs/digits_cond --clf runs/digits_clf

Each row is one ``scoresde eval`` (:func:`scoresde_jax.jobs.eval.evaluate` with the options of
:func:`scoresde_jax.config.eval_options`: the sharded round of ``scoresde sample``, resumable
rounds under ``<cond>/eval/``) of ``--num_samples`` digits for the classes 0-9 (cycled) with
``--method`` / ``--nfe``: ``class_accuracy`` (the embedded digits classifier on the requested
classes; chance 0.1) and the FID in that classifier's features against the eval job's reference
(``reference``: the held-out test digits). Classifier-free: ``(1 + w) s(x, t, y) - w s(x, t,
null)``; classifier: the null-class score of the same model plus ``w grad log p_t(y | x)``
(``w = 0``: unconditional).
Every row also has ``trace_s`` (jit trace + lower) and ``compile_s`` (XLA compile) of its
sampling round (:func:`benchmarks.common.round_program_timed`: the program ``scoresde eval`` jits,
timed apart on the abstract parameters): scales are data, so the rows of one guidance kind share
one program, timed once and recorded on each. Prints a table and writes
``benchmarks/results/bench_guidance.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import round_program_timed, trace_compile_s  # noqa: E402
from scoresde_jax import config as config_lib  # noqa: E402
from scoresde_jax.runner import setup_compilation_cache  # noqa: E402
from scoresde_jax.jobs import eval as eval_job  # noqa: E402

NOTE = ("trace_s = jit trace + lower, compile_s = XLA compile of the row's sampling round "
        "(jobs.generate.make_generator, traced on the abstract EMA parameters, compiled apart from "
        "the eval's own compile, without the persistent compilation cache); guidance scales are "
        "data: the rows of one guidance kind share that program, its compile timed once and "
        "recorded on each")


def program_timing(config, *, kind: str, clf: str | None, num_samples: int, batch_size: int,
                   method: str, nfe: int) -> dict:
    """``{"trace_s", "compile_s"}`` of the round the eval job jits for a guidance kind
    (its batch: ``min(batch_size, num_samples)`` rounded up to whole per-device batches)."""
    import jax

    bs = min(int(batch_size), int(num_samples))
    bs = -(-bs // jax.device_count()) * jax.device_count()
    cond = (dict(guidance=0.0) if kind == "classifier-free" else
            dict(classifier=clf, classifier_scale=0.0))
    return trace_compile_s(round_program_timed(config, batch_size=bs, method=method, nfe=nfe,
                                               classes=list(range(10)), **cond))


def guidance_kinds(clf: str | None) -> list[str]:
    return ["classifier-free"] + (["classifier"] if clf else [])


def guidance_rows(config, *, cond_dir: str, clf: str | None, scales, num_samples: int,
                  batch_size: int, method: str, nfe: int,
                  timings: dict | None = None) -> tuple[list[dict], int]:
    """One row per (guidance kind, scale): ``scoresde eval`` of ``cond_dir`` plus the trace /
    compile seconds of its round (``timings[kind]``, else :func:`program_timing` now); returns
    ``(rows, checkpoint step)``."""
    rows, step = [], None
    setup = config_lib.setup(config)
    for kind in guidance_kinds(clf):
        timing = (timings or {}).get(kind) or program_timing(
            config, kind=kind, clf=clf, num_samples=num_samples, batch_size=batch_size,
            method=method, nfe=nfe)
        for w in scales:
            cond = (dict(guidance=w) if kind == "classifier-free" else
                    dict(classifier=clf, classifier_scale=w))
            t0 = time.perf_counter()
            options = config_lib.eval_options(config, setup, num_samples=num_samples,
                                              batch_size=batch_size, method=method, nfe=nfe,
                                              classes=list(range(10)), progress=False, **cond)
            res = eval_job.evaluate(setup, options, cond_dir)
            step = res["step"]
            rows.append({"guidance": kind, "scale": w, "class_accuracy": res["class_accuracy"],
                         "fid": res["quality"]["fid"], "kid": res["quality"]["kid"],
                         "inception_score": res["quality"]["inception_score"],
                         "seconds": time.perf_counter() - t0, **timing, "rounds": res["rounds"],
                         "reference": res["reference"]})
            print(f"{kind:16s} w={w:<4g} class_accuracy={rows[-1]['class_accuracy']:.3f} "
                  f"fid={rows[-1]['fid']:.2f} ({rows[-1]['seconds']:.0f} s; trace "
                  f"{timing['trace_s']:.1f} s, compile {timing['compile_s']:.1f} s)", flush=True)
    return rows, step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cond", required=True, help="workdir of configs/digits_conditional.py")
    ap.add_argument("--clf", help="workdir of configs/digits_classifier.py (classifier guidance)")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    ap.add_argument("--num_samples", type=int, default=200)
    ap.add_argument("--batch_size", type=int, default=100)
    ap.add_argument("--method", default="dpm_solver_pp")
    ap.add_argument("--nfe", type=int, default=20)
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" /
                                         "bench_guidance.json"))
    args = ap.parse_args()
    config = config_lib.config_for_workdir(None, args.cond)
    # the programs' timings first: before the persistent compilation cache is on, so that
    # compile_s is an XLA compile, not a cache read (the cache serves the evals' own compiles)
    timings = {kind: program_timing(config, kind=kind, clf=args.clf, num_samples=args.num_samples,
                                    batch_size=args.batch_size, method=args.method, nfe=args.nfe)
               for kind in guidance_kinds(args.clf)}
    setup_compilation_cache()
    rows, step = guidance_rows(config, cond_dir=args.cond, clf=args.clf, scales=args.scales,
                               num_samples=args.num_samples, batch_size=args.batch_size,
                               method=args.method, nfe=args.nfe, timings=timings)
    out = {"cond": os.path.abspath(args.cond), "clf": args.clf and os.path.abspath(args.clf),
           "step": step, "num_samples": args.num_samples, "method": args.method,
           "nfe": args.nfe, "fid_reference": rows[0]["reference"] if rows else None,
           "load_average": os.getloadavg(), "note": NOTE, "rows": rows}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{'guidance':16s} {'w':>4s} {'class_acc':>9s} {'fid':>7s} {'trace_s':>7s} "
          f"{'compile_s':>9s}")
    for r in rows:
        print(f"{r['guidance']:16s} {r['scale']:4g} {r['class_accuracy']:9.3f} {r['fid']:7.2f} "
              f"{r['trace_s']:7.2f} {r['compile_s']:9.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
