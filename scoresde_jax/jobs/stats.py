"""``scoresde stats``: reference feature statistics of a dataset split (the paper's
``assets/stats/<dataset>_stats.npz``).

Every image of the split goes through the dataset's feature network
(:func:`scoresde_jax.evaluation.reference.feature_network`) as its stored 8-bit pixels
(``round(255 x)``), in resumable rounds (:func:`~scoresde_jax.jobs.rounds.run_rounds`, under
``<out>.rounds/``); the last, shorter batch is kept. The file holds the raw ``pool_3`` features (so
KID works), ``mu`` and ``sigma``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import NamedTuple

import numpy as np

from scoresde_jax import __version__
from scoresde_jax.data.spec import DataSpec, stored_pixels
from scoresde_jax.evaluation.reference import feature_network, save_reference
from scoresde_jax.jobs import common
from scoresde_jax.jobs.rounds import run_rounds
from scoresde_jax.training import distributed
from scoresde_jax.config_files import jsonable

log = logging.getLogger("scoresde_jax.jobs")


class StatsOptions(NamedTuple):
    """The options of :func:`stats` (built by :func:`scoresde_jax.config.stats_options`)."""

    out: str
    split: str = "train"
    batch_size: int = 500
    num_examples: int | None = None
    inception_path: str | None = None
    preprocess: str = "score_sde"
    data_dir: str | None = None
    progress: bool = True
    overwrite: bool = False


def stats(data: DataSpec, options: StatsOptions) -> dict:
    """Features of every image of ``options.split`` of ``data`` -> ``options.out`` (``pool_3``,
    ``mu``, ``sigma``). Returns ``{'stats', 'num_images', 'split', 'features', 'preprocess'}``."""
    d, o = data, options
    if d.vector:
        raise ValueError("reference statistics are for image data; toy data are evaluated "
                         "against exact samples (evaluation.toy_metrics).")
    net, info = feature_network(d.name, inception_path=o.inception_path,
                                preprocess=o.preprocess, batch_size=o.batch_size)
    total, read = d.split_reader(o.split, batch_size=o.batch_size, data_dir=o.data_dir,
                                 num_examples=o.num_examples)

    def make_round(k: int, n: int) -> dict:
        feats, _ = net(stored_pixels(read(k, n)))
        return {"pool_3": np.asarray(feats, np.float32)}

    record = {"job": "stats", "data": {"name": d.name, "options": jsonable(dict(d.options))},
              "split": o.split, "num_examples": o.num_examples, "features": info,
              "version": __version__}
    t0 = time.perf_counter()
    arrays = run_rounds(os.fspath(o.out) + ".rounds", num_items=total, batch_size=o.batch_size,
                        make_round=make_round, record=record, overwrite=o.overwrite,
                        desc=f"stats {o.split}", progress=o.progress)
    if distributed.is_main_process():
        save_reference(o.out, arrays["pool_3"])
        log.info("Wrote statistics of %d %s images to %s", total, o.split, o.out)
    result = {**common.header("stats", step=None, seed=None, options=o,
                              seconds=time.perf_counter() - t0),
              "stats": os.path.abspath(o.out), "num_images": total, "split": o.split,
              "dataset": d.name, **info}
    common.write_results(os.fspath(o.out) + ".json", result)
    return result
