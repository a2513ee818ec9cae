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
from scoresde_jax.training import distributed

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training configuration (ml_collections file).", lock_config=False)
flags.DEFINE_string("workdir", None, "Work directory for checkpoints, logs and samples.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "sample"], "train (+ sample and evaluate), eval or sample.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (the embedded datasets need none).")
flags.DEFINE_integer("num_samples", None, "Number of samples for the final grid / metrics.")
flags.DEFINE_bool("evaluate", True, "After training, sample a PNG grid and compute the quality metric.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    distributed.initialize()
    config = FLAGS.config
    if FLAGS.mode == "train" and FLAGS.evaluate:
        print(commands.train_and_evaluate(config, FLAGS.workdir, num_samples=FLAGS.num_samples,
                                          data_dir=FLAGS.data_dir))
    elif FLAGS.mode == "train":
        commands.train(config, FLAGS.workdir, data_dir=FLAGS.data_dir)
    elif FLAGS.mode == "eval":
        print(commands.evaluate(config, FLAGS.workdir, num_samples=FLAGS.num_samples))
    else:
        print({"samples": commands.sample(config, FLAGS.workdir,
                                          num_samples=FLAGS.num_samples or 64)[1]})


if __name__ == "__main__":
    app.run(main)
