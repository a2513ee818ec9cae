"""The ``stats`` job: reference feature statistics of a dataset split (the paper's
``assets/stats/<dataset>_stats.npz``), and :func:`split_reader`, whole-split random access shared
with the likelihood job.

Every image of the split goes through the dataset's feature network
(:func:`scoresde_jax.evaluation.reference.feature_network`) on the uint8 path (``round(255 x)``,
the stored pixels), in resumable rounds (:func:`~scoresde_jax.commands.rounds.run_rounds`); the
last, shorter batch is kept. Each round's images are sharded over this process's devices by the
feature network (the Inception extractor, in chunks of at most ``batch_size`` and its per-device
cap). The file holds the raw ``pool_3`` features (so KID works), ``mu`` and ``sigma``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax.commands.rounds import run_rounds
from scoresde_jax.config.run import dataset_name, eval_options
from scoresde_jax.evaluation.reference import feature_network, save_reference
from scoresde_jax.training import distributed

log = logging.getLogger("scoresde_jax.commands")

__all__ = ["split_reader", "stats", "to_uint8"]


def to_uint8(images: Any) -> np.ndarray:
    """Stored 8-bit pixels of images in [0, 1] read from a dataset: ``round(255 x)``."""
    return np.rint(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def split_reader(config: Any, split: str, *, batch_size: int, data_dir: str | None = None,
                 num_examples: int | None = None
                 ) -> tuple[int, Callable[[int, int], np.ndarray]]:
    """``(num_examples, read)``: ``read(k, n)`` gives examples ``[k B, k B + n)`` of ``split``
    (images in [0, 1] ``(n, H, W, C)`` or vectors ``(n, D)``), in order, without dequantization,
    the last short batch included. Toy (generated) data have no size: pass ``num_examples``."""
    kw = dict(shuffle=False, data_dir=data_dir, uniform_dequantization=False, shard=(0, 1))
    if config_lib.is_vector_data(config):
        if num_examples is None:
            raise ValueError("a generated toy dataset has no fixed split size; pass "
                             "--num_examples (or config.eval.num_samples).")
        it = config_lib.get_dataset(config, split=split, batch_size=batch_size, **kw)
        return int(num_examples), lambda k, n: np.asarray(it.dataset[k]["image"])[:n]
    it = config_lib.get_dataset(config, split=split, batch_size=batch_size, num_epochs=1, **kw)
    total = int(it.info.get("examples_per_host", len(it) * batch_size))
    if num_examples is not None:
        total = min(total, int(num_examples))
    full = len(it)
    single = None

    def read(k: int, n: int) -> np.ndarray:
        nonlocal single
        if k < full:
            return np.asarray(it.dataset[k]["image"])[:n]
        if single is None:  # the tail that batch_size drops: one example at a time
            single = config_lib.get_dataset(config, split=split, batch_size=1, num_epochs=1, **kw)
        return np.concatenate([np.asarray(single.dataset[k * batch_size + j]["image"])
                               for j in range(n)])

    return total, read


def stats(config: Any, out: str, *, split: str = "train", batch_size: int | None = None,
          inception_path: str | None = None, preprocess: str | None = None,
          data_dir: str | None = None, num_examples: int | None = None,
          progress: bool = True) -> dict:
    """Features of every image of ``split`` -> ``out`` (``pool_3``, ``mu``, ``sigma``).

    Rounds go to ``<out>.rounds/`` and are reused when the job is restarted. Returns
    ``{'stats', 'num_images', 'features', 'preprocess', 'split'}``.
    """
    if config_lib.is_vector_data(config):
        raise ValueError("reference statistics are for image data; toy data are evaluated "
                         "against exact samples (evaluation.toy_metrics).")
    opts = eval_options(config)
    bs = int(batch_size or opts.get("batch_size", 500))
    net, info = feature_network(
        dataset_name(config), inception_path=inception_path or opts.get("inception_path"),
        preprocess=preprocess or opts.get("preprocess", "score_sde"), batch_size=bs)
    total, read = split_reader(config, split, batch_size=bs, data_dir=data_dir,
                               num_examples=num_examples)

    def make_round(k: int, n: int) -> dict:
        feats, _ = net(to_uint8(read(k, n)))
        return {"pool_3": np.asarray(feats, np.float32)}

    arrays = run_rounds(os.fspath(out) + ".rounds", num_items=total, batch_size=bs,
                        make_round=make_round, desc=f"stats {split}", progress=progress)
    if distributed.is_main_process():
        save_reference(out, arrays["pool_3"])
        log.info("Wrote statistics of %d %s images to %s", total, split, out)
    return {"stats": os.path.abspath(out), "num_images": total, "split": split, **info}
