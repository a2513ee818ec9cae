"""Thin absl entry point (as the official ``main.py``): parse flags, call one function of
:mod:`scoresde_jax.commands`.

    python -m experiments.main --config configs/digits_ddpmpp.py --workdir runs/digits \
        --config.training.n_iters=2000 [--mode train|eval|sample]
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from scoresde_jax import commands
from scoresde_jax.cli import setup_compilation_cache
from scoresde_jax.training import distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (ml_collections file).", lock_config=False)
flags.DEFINE_string("workdir", None, "Work directory for checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "train (+ sample and evaluate), eval or sample.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (the embedded datasets need none).")
flags.DEFINE_integer("num_samples", None, "Number of samples for the final grid / metrics.")
flags.DEFINE_bool("evaluate", True, "After training, sample a PNG grid and compute the quality metric.")
flags.DEFINE_string("compilation_cache", None,
                    "JAX persistent compilation cache directory ('none' turns it off; default as the "
                    "scoresde CLI: $JAX_COMPILATION_CACHE_DIR or ~/.cache/scoresde_jax/xla).")
flags.DEFINE_string("class", None, "Class-conditional model: the class(es) to sample (eval and "
                    "sample modes), e.g. 3 or 0,1,2 (cycled; default all).")
flags.DEFINE_float("guidance", None, "Classifier-free guidance scale w (default config.eval.guidance).")
flags.DEFINE_string("classifier", None, "Workdir of a noise-conditional classifier (classifier guidance).")
flags.DEFINE_float("classifier_scale", None, "Classifier guidance scale (default 1).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    setup_compilation_cache(FLAGS.compilation_cache)
    distributed.initialize()
    config = FLAGS.config
    if FLAGS.mode == "train" and FLAGS.evaluate:
        print(commands.train_and_evaluate(config, FLAGS.workdir, num_samples=FLAGS.num_samples,
                                          data_dir=FLAGS.data_dir))
    elif FLAGS.mode == "train":
        commands.train(config, FLAGS.workdir, data_dir=FLAGS.data_dir)
    elif FLAGS.mode == "eval":
        print(commands.evaluate(config, FLAGS.workdir, num_samples=FLAGS.num_samples,
                                **_conditioning()))
    else:
        print({"samples": commands.sample(config, FLAGS.workdir,
                                          num_samples=FLAGS.num_samples or 64,
                                          **_conditioning())[1]})


def _conditioning() -> dict:
    """The --class / --guidance / --classifier / --classifier_scale flags given."""
    given = dict(classes=FLAGS["class"].value, guidance=FLAGS.guidance,
                 classifier=FLAGS.classifier, classifier_scale=FLAGS.classifier_scale)
    return {k: v for k, v in given.items() if v is not None}


if __name__ == "__main__":
    app.run(main)
