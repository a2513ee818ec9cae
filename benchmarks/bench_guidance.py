"""Class accuracy and FID against the guidance scale on digits: classifier-free guidance of a
class-conditional model and classifier guidance with a noise-conditional classifier.

Needs two trained workdirs (the full runs, ~10 minutes each on 2 CPU cores)::

    scoresde train --config configs/digits_conditional.py --workdir runs/digits_cond
    scoresde train --config configs/digits_classifier.py --workdir runs/digits_clf
    .venv/bin/python benchmarks/bench_guidance.py --cond runs/digits_cond --clf runs/digits_clf

For each scale in ``--scales`` (0 1 2 4) it samples ``--num_samples`` digits for the classes 0-9
(cycled) and reports the embedded digits classifier's accuracy on the requested classes
(``class_accuracy``) and the digits FID. Classifier-free: ``(1 + w) s(x, t, y) - w s(x, t, null)``;
classifier: the null-class score of the same model plus ``w grad log p_t(y | x)``. Prints a table
and writes ``benchmarks/results/bench_guidance.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax import guidance
from scoresde_jax.training import restore_params


def _sampler(config, s, y, classifier=None):
    shape = (len(y),) + tuple(s.input_shape[1:])
    sampling_fn = config_lib.get_sampling_fn(config, s.sde, shape, s.sampling_eps)
    inverse = config_lib.get_data_inverse_scaler(config)
    null = guidance.null_label(s.model)

    def sample(params, clf_params, w, rng):
        label_score = guidance.model_label_score_fn(s.sde, s.model, params, continuous=s.continuous)
        if classifier is None:
            score = guidance.classifier_free_guidance(label_score, y, w, null=null)
        else:
            clf = guidance.model_classifier_fn(s.sde, classifier, clf_params)
            score = guidance.classifier_guidance(guidance.label_score(label_score, null), clf, y, w)
        return jnp.clip(inverse(sampling_fn(rng, score).x), 0.0, 1.0)

    return jax.jit(sample)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cond", required=True, help="workdir of configs/digits_conditional.py")
    ap.add_argument("--clf", help="workdir of configs/digits_classifier.py (classifier guidance)")
    ap.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    ap.add_argument("--num_samples", type=int, default=500)
    args = ap.parse_args()

    config = config_lib.load_config("configs/digits_conditional.py")
    s = config_lib.setup(config)
    params, step = restore_params(args.cond, s.abstract_state())
    y = config_lib.sample_classes(range(10), args.num_samples)
    quality = config_lib.get_quality_fn(config)
    kinds = {"classifier-free": (None, None)}
    if args.clf:
        cc = config_lib.load_config("configs/digits_classifier.py")
        sc = config_lib.setup(cc)
        kinds["classifier"] = (sc.model, restore_params(args.clf, sc.abstract_state())[0])
    rows = []
    for kind, (clf, clf_params) in kinds.items():
        fn = _sampler(config, s, jnp.asarray(y), clf)
        for w in args.scales:
            x = np.asarray(fn(params, clf_params, jnp.asarray(w), jax.random.key(0)))
            rows.append({"guidance": kind, "scale": w,
                         "class_accuracy": config_lib.class_accuracy(config, x, y),
                         "fid": quality(x).get("fid")})
            print(f"{kind:16s} w={w:<4g} class_accuracy={rows[-1]['class_accuracy']:.3f} "
                  f"fid={rows[-1]['fid']}", flush=True)
    out = pathlib.Path(__file__).parent / "results" / "bench_guidance.json"
    out.write_text(json.dumps({"step": step, "num_samples": args.num_samples, "rows": rows},
                              indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
