"""The ``eval`` job (sample-quality metrics of a workdir, as the paper: FID / IS / KID of 50,000
samples) and ``train_and_evaluate``.

Samples are drawn in rounds of ``eval.batch_size`` over all devices; round ``k`` uses the key
``fold_in(PRNGKey(seed), k)`` and is saved (uint8 samples, features, logits) under
``<workdir>/eval/<tag>/round_<k>.npz`` (:mod:`~scoresde_jax.commands.rounds`), so a killed
evaluation resumes with nothing recomputed and gives what an unbroken one gives. Features come from
:func:`~scoresde_jax.evaluation.reference.feature_network` (Inception-v3 for image datasets, the
digits classifier for DIGITS) on the uint8 samples ``trunc(255 x)`` (the paper's code). The
rounds come from :func:`scoresde_jax.commands.sampling.round_fn`, the sharded round of the
``sample`` job. A class-conditional model samples ``classes`` (cycled; default all, from
``config.eval.classes``) at ``guidance`` (``config.eval.guidance``) or with a classifier, and the
results add ``class_accuracy`` (DIGITS: the embedded digits classifier on the requested classes)
beside the class-conditional FID.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable

import jax
import numpy as np

from scoresde_jax import config as config_lib
from scoresde_jax.commands.rounds import run_rounds
from scoresde_jax.commands.sample_cmd import sample
from scoresde_jax.commands.sampling import conditioning, round_fn
from scoresde_jax.commands.stats_cmd import split_reader, to_uint8
from scoresde_jax.commands.train_cmd import train
from scoresde_jax.config.run import dataset_name, eval_options
from scoresde_jax.evaluation.reference import (
    Reference,
    check_inception_path,
    feature_network,
    load_reference,
    quality_report,
    reference_from_features,
)
from scoresde_jax.metrics_io import save_samples
from scoresde_jax.training import distributed, restore_params

log = logging.getLogger("scoresde_jax.commands")


def samples_to_uint8(images: Any) -> np.ndarray:
    """Samples in [0, 1] -> uint8 as the paper's code: ``trunc(clip(255 x, 0, 255))``."""
    return np.clip(np.asarray(images, np.float32) * 255.0, 0.0, 255.0).astype(np.uint8)


def sample_rounds(out_dir: str, *, num_samples: int, batch_size: int,
                  draw: Callable[[int, int], Any], net: Callable | None,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """Resumable rounds of ``draw(k, n) -> n samples`` (images in [0, 1] or vectors), each kept as
    ``samples`` (uint8 images, taken as they are or quantized from [0, 1]; vectors as they are) plus ``features`` and ``logits`` of
    ``net(uint8 images)`` when ``net`` is given. Returns the arrays of all rounds."""

    def make_round(k: int, n: int) -> dict:
        x = np.asarray(draw(k, n))[:n]
        if net is None:
            return {"samples": x}
        u8 = x if x.dtype == np.uint8 else samples_to_uint8(x)
        feats, logits = net(u8)
        return {"samples": u8, "features": np.asarray(feats, np.float32),
                "logits": np.asarray(logits, np.float32)}

    return run_rounds(out_dir, num_items=num_samples, batch_size=batch_size,
                      make_round=make_round, desc="eval samples", progress=progress)


def _restore(workdir: str, s: Any, checkpoint: int | None) -> tuple[Any, int]:
    """EMA parameters of step ``checkpoint`` (default: the newest good one) and its step."""
    return restore_params(workdir, s.abstract_state(), step=checkpoint)


def dataset_reference(config: Any, net: Callable, *, split: str = "train", batch_size: int,
                      data_dir: str | None = None) -> Reference:
    """Reference statistics computed in memory from every image of ``split`` (embedded data)."""
    total, read = split_reader(config, split, batch_size=batch_size, data_dir=data_dir)
    feats = [net(to_uint8(read(k, min(batch_size, total - k * batch_size))))[0]
             for k in range(-(-total // batch_size))]
    return reference_from_features(np.concatenate(feats))


def evaluate(config: Any, workdir: str, *, num_samples: int | None = None,
             out: str | None = None, seed: int = 0, checkpoint: int | None = None,
             batch_size: int | None = None, inception_path: str | None = None,
             stats_path: str | None = None, preprocess: str | None = None, model: Any = None,
             method: str | None = None, nfe: int | None = None, progress: bool = True,
             classes: Any = None, guidance: float | None = None, classifier: str | None = None,
             classifier_scale: float | None = None) -> dict:
    """Sample ``num_samples`` (``config.eval.num_samples``) in resumable rounds and compute the
    dataset's metrics: FID / IS (1 and 10 splits) / KID against reference statistics for images
    (``stats_path`` / ``config.eval.stats_path``: a :func:`~scoresde_jax.commands.stats` file or
    the official one; DIGITS without one: its train split), the toy metrics for vector data.
    ``method`` / ``nfe``: the sampler and its budget of score evaluations
    (:func:`scoresde_jax.samplers.sample`; default ``config.sampling``). ``classes`` /
    ``guidance`` / ``classifier`` / ``classifier_scale``: the conditioning of a class-conditional
    or classifier-guided eval (:func:`scoresde_jax.commands.sampling.conditioning`).

    Returns (and writes to ``<rounds dir>/results.json``) ``{'samples' (PNG of the first 64),
    'quality', 'num_samples', 'step', 'features', 'preprocess', 'stats', 'sampler', 'nfe',
    'rounds', 'seconds_per_sample'}``, plus ``'class_accuracy'``, ``'classes'`` and
    ``'guidance'`` for a conditional eval.
    """
    opts = eval_options(config)
    n = config_lib.eval_num_samples(config, num_samples)
    s = config_lib.setup(config, model=model)
    bs = min(int(batch_size or opts.get("batch_size", n)), n)
    bs = -(-bs // s.mesh.devices.size) * s.mesh.devices.size  # whole per-device batches
    vector, name = config_lib.is_vector_data(config), dataset_name(config)
    net, info, ref, stats_file = None, {"features": None, "preprocess": None}, None, None
    if not vector:  # fail on missing files before any sampling
        inception_path = inception_path or opts.get("inception_path")
        check_inception_path(name, inception_path)
        stats_file = stats_path or opts.get("stats_path")
        if stats_file is not None or name.upper() != "DIGITS":
            stats_file = stats_file or f"{name.lower()}_stats.npz"
            ref = load_reference(stats_file)
        net, info = feature_network(
            name, inception_path=inception_path,
            preprocess=preprocess or opts.get("preprocess", "score_sde"), batch_size=bs)
        if ref is None:
            ref = dataset_reference(config, net, batch_size=bs)
    cond = conditioning(config, s, classes=classes, guidance=guidance, classifier=classifier,
                        classifier_scale=classifier_scale)
    params, step = _restore(workdir, s, checkpoint)
    fn = round_fn(config, s, batch_size=bs, method=method, nfe=nfe, cond=cond)
    key = jax.random.PRNGKey(seed)
    method, options = config_lib.sampler_options(config, method=method)

    def draw(k: int, m: int) -> np.ndarray:
        return np.asarray(distributed.to_host(fn(params, jax.random.fold_in(key, k), k)[0]))[:m]

    tag = (f"step_{step}_seed_{seed}_batch_{bs}_{method}" + (f"_nfe_{nfe}" if nfe else "")
           + cond.tag())
    out_dir = os.path.join(os.path.abspath(workdir), "eval", tag)
    t0 = time.perf_counter()
    arrays = sample_rounds(out_dir, num_samples=n, batch_size=bs, draw=draw, net=net,
                           progress=progress)
    seconds = time.perf_counter() - t0
    if vector:
        quality = config_lib.get_quality_fn(config)(arrays["samples"])
    else:
        quality = quality_report(arrays["features"], arrays["logits"], ref, seed=seed)
    quality = {k: (None if v is None else float(v)) for k, v in quality.items()}
    quality["num_samples"] = n
    extra = dict(cond.meta())
    if cond.classes is not None:
        labels = config_lib.sample_classes(cond.classes, n)
        extra["class_accuracy"] = _class_accuracy(config, arrays["samples"], labels)
        quality["class_accuracy"] = extra["class_accuracy"]
    png = out or os.path.join(out_dir, "samples.png")
    result = {"samples": png, "quality": quality, "num_samples": n, "step": step,
              "checkpoint": step, **info,
              "stats": os.path.abspath(stats_file) if stats_file else
              (None if vector else f"{name} train split (in memory)"),
              "sampler": {"method": method, **{k: v for k, v in options.items()}},
              "nfe": nfe, "rounds": out_dir, "seconds": seconds,
              "seconds_per_sample": seconds / n, **extra}
    if distributed.is_main_process():
        first = arrays["samples"][:64]
        save_samples(first.astype(np.float32) / 255.0 if first.dtype == np.uint8 else first, png)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(result, f, indent=2, default=str)
        log.info("eval: %s (written to %s)", json.dumps(quality), out_dir)
    return result


def _class_accuracy(config: Any, samples: np.ndarray, labels: np.ndarray) -> float | None:
    """The dataset classifier's accuracy on samples for ``labels`` (None without one)."""
    if dataset_name(config).upper() != "DIGITS":
        return None
    x = samples.astype(np.float32) / 255.0 if samples.dtype == np.uint8 else samples
    return config_lib.class_accuracy(config, x, labels)


def train_and_evaluate(config: Any, workdir: str, *, num_samples: int | None = None,
                       **train_kwargs) -> dict:
    """Train, then sample with the EMA parameters and compute the quality metric.

    Returns ``{'step', 'train', 'samples', 'quality', 'train_seconds', 'seconds'}`` and writes it
    to ``<workdir>/eval/results.json``.
    """
    t0 = time.perf_counter()
    result = train(config, workdir, **train_kwargs)
    train_seconds = time.perf_counter() - t0
    n = config_lib.eval_num_samples(config, num_samples)
    samples, png = sample(config, workdir, num_samples=n, seed=config_lib.run_seed(config) + 1,
                          model=train_kwargs.get("model"))
    quality = config_lib.get_quality_fn(config)(samples)
    out = {"step": result.step, "train": result.metrics, "samples": png, "quality": quality,
           "train_seconds": train_seconds, "seconds": time.perf_counter() - t0}
    if distributed.is_main_process():
        path = os.path.join(os.path.abspath(workdir), "eval", "results.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        log.info("Results: %s (written to %s)", json.dumps(quality), path)
    return out
