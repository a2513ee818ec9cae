"""Class accuracy and FID against the guidance scale on digits: classifier-free guidance of a
class-conditional model and classifier guidance with a noise-conditional classifier.

Needs two trained workdirs (about 10 minutes each on 2 idle CPU cores)::

    scoresde train --config configs/digits_conditional.py --workdir runs/digits_cond --no_evaluate
    scoresde train --config configs/digits_classifier.py --workdir runs/digits_clf --no_evaluate
    .venv/bin/python benchmarks/bench_guidance.py --cond runs/digits_cond --clf runs/digits_clf

Each row is one ``scoresde eval`` (:func:`scoresde_jax.commands.evaluate`: the sharded round of
``scoresde sample``, resumable rounds under ``<cond>/eval/``) of ``--num_samples`` digits for the
classes 0-9 (cycled) with ``--method`` / ``--nfe``: ``class_accuracy`` (the embedded digits
classifier on the requested classes; chance 0.1) and the FID in that classifier's features against
the train digits. Classifier-free: ``(1 + w) s(x, t, y) - w s(x, t, null)``; classifier: the
null-class score of the same model plus ``w grad log p_t(y | x)`` (``w = 0``: unconditional).
Prints a table and writes ``benchmarks/results/bench_guidance.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

from scoresde_jax import commands
from scoresde_jax import config as config_lib
from scoresde_jax.cli import setup_compilation_cache


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
    setup_compilation_cache()
    config = config_lib.config_for_workdir(None, args.cond)
    kinds = ["classifier-free"] + (["classifier"] if args.clf else [])
    rows = []
    for kind in kinds:
        for w in args.scales:
            cond = (dict(guidance=w) if kind == "classifier-free" else
                    dict(classifier=args.clf, classifier_scale=w))
            t0 = time.perf_counter()
            res = commands.evaluate(config, args.cond, num_samples=args.num_samples,
                                    batch_size=args.batch_size, method=args.method, nfe=args.nfe,
                                    classes=list(range(10)), progress=False, **cond)
            rows.append({"guidance": kind, "scale": w, "class_accuracy": res["class_accuracy"],
                         "fid": res["quality"]["fid"], "kid": res["quality"]["kid"],
                         "inception_score": res["quality"]["inception_score"],
                         "seconds": time.perf_counter() - t0, "rounds": res["rounds"]})
            print(f"{kind:16s} w={w:<4g} class_accuracy={rows[-1]['class_accuracy']:.3f} "
                  f"fid={rows[-1]['fid']:.2f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    out = {"cond": os.path.abspath(args.cond), "clf": args.clf and os.path.abspath(args.clf),
           "step": res["step"], "num_samples": args.num_samples, "method": args.method,
           "nfe": args.nfe, "fid_reference": "digits train split (digits classifier features)",
           "load_average": os.getloadavg(), "rows": rows}
    pathlib.Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"{'guidance':16s} {'w':>4s} {'class_acc':>9s} {'fid':>7s}")
    for r in rows:
        print(f"{r['guidance']:16s} {r['scale']:4g} {r['class_accuracy']:9.3f} {r['fid']:7.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
