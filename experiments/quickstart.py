"""The project's main job: train a small DDPM++ on the embedded 8x8 digits, sample, write a PNG grid, print a metric.

    python -m experiments.quickstart [--workdir runs/quickstart] [--config configs/digits_ddpmpp.py]
                                     [--set training.n_iters=3000 ...] [--compilation_cache DIR]

Runs on a laptop CPU in a few minutes and needs no download (scikit-learn ships the digits).  Training resumes from
the last checkpoint in ``--workdir`` if one exists (delete the folder to start over).  The metric is a Frechet
distance in the features of a digits classifier trained on real digits (``evaluation.digits_metrics``), against the
held-out test digits; for scale, real digits score about 2 and noise or blobs about 80-100.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from scoresde_jax import config as config_lib
from scoresde_jax.jobs.train import train_and_evaluate
from scoresde_jax.runner import setup_compilation_cache

REFERENCE = "real held-out digits ~2, uniform noise ~90, blurred blobs ~80-100"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/digits_ddpmpp.py", help="config file (official layout)")
    p.add_argument("--workdir", default="runs/quickstart", help="checkpoints, logs, samples")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set training.n_iters=500 (repeatable)")
    p.add_argument("--compilation_cache", default=None, metavar="DIR",
                   help="JAX's persistent compilation cache, as the CLI's (default "
                        "~/.cache/scoresde_jax/xla; 'none' turns it off): a second run compiles "
                        "nothing")
    args = p.parse_args(argv)
    setup_compilation_cache(args.compilation_cache)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    config = config_lib.load_config(args.config, overrides=args.set)
    t0 = time.perf_counter()
    setup = config_lib.setup(config)
    result = train_and_evaluate(setup, config_lib.train_options(config, setup), args.workdir)
    q = result["quality"]
    print()
    print("=" * 78)
    print(f"trained {config.model.name} ({config.training.sde}) on {config.data.dataset} for {result['step']} steps "
          f"in {time.perf_counter() - t0:.0f} s")
    print(f"samples: {result['grid']}")
    if q:
        print(f"Frechet distance in digit-classifier features (FID) of {q['num_samples']} samples "
              f"against the {result['reference']}: {q['fid']:.2f}   ({REFERENCE})")
        others = {k: round(v, 4) for k, v in q.items() if k != "fid"}
        print(f"other metrics: {json.dumps(others)}")
    print("=" * 78)
    return result


if __name__ == "__main__":
    main()
