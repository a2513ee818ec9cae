"""``scoresde eval``: the sample-quality report of a workdir, as the paper (FID / IS / KID of
50,000 samples); training's final evaluation is this same report.

Samples come from :func:`scoresde_jax.jobs.generate.generate` in resumable rounds of
``batch_size`` (``<workdir>/eval/<tag>/round_<k>.npz``: uint8 samples plus their features and
logits), so a killed evaluation resumes with nothing recomputed. One reference per dataset, named
in the results (``reference``):

=================  ===========================================================================
data               reference
=================  ===========================================================================
CIFAR-10 & co.     a statistics file (``--stats`` / ``eval.stats_path``, default
                   ``<dataset>_stats.npz``): the train split's Inception features, as the paper
DIGITS             the held-out test split (360 digits, unseen by the model and by the digits
                   classifier that gives the features), unless ``--stats`` names a file
TOY_* mixtures     exact samples of the mixture (sliced Wasserstein distances)
=================  ===========================================================================

Features of images come from :func:`~scoresde_jax.evaluation.reference.feature_network` on uint8
pixels (samples ``trunc(255 x)``, dataset images ``round(255 x)``). A class-conditional model adds
``class_accuracy`` (DIGITS: the digits classifier on the requested classes; chance 0.1).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, NamedTuple

import numpy as np

from scoresde_jax import evaluation
from scoresde_jax.data.spec import stored_pixels
from scoresde_jax.jobs import common
from scoresde_jax.jobs.generate import (Conditioning, SamplerSpec, generate, image_labels,
                                        make_generator)
from scoresde_jax.jobs.rounds import record_digest
from scoresde_jax.metrics_io import save_samples
from scoresde_jax.training import distributed, restore_params

log = logging.getLogger("scoresde_jax.jobs")

GRID_MAX = 64  # images in grid.png


class EvalOptions(NamedTuple):
    """The options of :func:`evaluate` (built by :func:`scoresde_jax.config.eval_options`)."""

    sampler: SamplerSpec
    num_samples: int = 64
    batch_size: int = 64
    seed: int = 0
    cond: Conditioning = Conditioning()
    checkpoint: int | None = None
    inception_path: str | None = None
    stats_path: str | None = None
    preprocess: str = "score_sde"
    data_dir: str | None = None
    progress: bool = True
    overwrite: bool = False


class Reference(NamedTuple):
    """The reference of a dataset: statistics (None for vector data), what they are, and the
    feature network (None for vector data)."""

    stats: evaluation.Reference | None
    description: str
    net: Callable | None
    features: dict


def reference(setup: Any, options: EvalOptions, batch_size: int) -> Reference:
    """The dataset's one reference (module table); missing files fail here, before sampling."""
    d, o = setup.data, options
    if d.vector:
        return Reference(None, f"exact samples of {d.name} (seed {setup.seed})", None, {})
    evaluation.reference.check_inception_path(d.name, o.inception_path)
    stats_file = o.stats_path
    if stats_file is None and d.name.upper() != "DIGITS":
        stats_file = f"{d.name.lower()}_stats.npz"
    stats = evaluation.load_reference(stats_file) if stats_file else None
    net, info = evaluation.feature_network(d.name, inception_path=o.inception_path,
                                           preprocess=o.preprocess, batch_size=batch_size)
    if stats is not None:
        return Reference(stats, f"statistics file {os.path.abspath(stats_file)}", net, info)
    total, read = d.split_reader("test", batch_size=batch_size, data_dir=o.data_dir)
    feats = [net(stored_pixels(read(k, min(batch_size, total - k * batch_size))))[0]
             for k in range(-(-total // batch_size))]
    return Reference(evaluation.reference.reference_from_features(np.concatenate(feats)),
                     f"{d.name} test split ({total} images, held out)", net, info)


def evaluate(setup: Any, options: EvalOptions, workdir: str) -> dict:
    """Sample ``options.num_samples`` in resumable rounds and report the dataset's metrics
    against its reference (module docstring). Returns (and writes to
    ``<workdir>/eval/<tag>/results.json``) ``{'quality', 'reference', 'grid' (PNG of the first
    64), 'num_samples', 'step', 'features', 'preprocess', 'sampler', 'nfe', 'rounds',
    'seconds_per_sample'}``, plus ``'class_accuracy'``, ``'classes'`` and ``'guidance'`` for a
    conditional eval."""
    s, o = setup, options
    n = int(o.num_samples)
    bs = min(int(o.batch_size), n)
    bs = -(-bs // s.mesh.devices.size) * s.mesh.devices.size  # whole per-device batches
    ref = reference(s, o, bs)
    params, step = restore_params(workdir, s.abstract_state(), step=o.checkpoint)
    gen = make_generator(s, o.sampler, batch_size=bs, cond=o.cond)

    def features(x: np.ndarray) -> dict:
        if ref.net is None:
            return {}
        feats, logits = ref.net(x)
        return {"features": np.asarray(feats, np.float32), "logits": np.asarray(logits, np.float32)}

    record = common.job_record("eval", s, o, step=step, params=params,
                               classifier_params=gen.classifier_params, drop=("batch_size",))
    record["features"] = ref.features
    tag = (f"step_{step}_seed_{o.seed}_{o.sampler.method}"
           + (f"_nfe_{o.sampler.nfe}" if o.sampler.nfe else "") + o.cond.tag()
           + f"_{record_digest(record)}")
    out_dir = os.path.join(os.path.abspath(workdir), "eval", tag)
    res = generate(gen, params, out_dir, num_samples=n, seed=o.seed, extra=features,
                   record=record, overwrite=o.overwrite, desc="eval samples",
                   progress=o.progress)
    arrays = res.arrays
    if ref.stats is None:
        quality = evaluation.toy_metrics(s.data.name, arrays["samples"], seed=s.seed)
    else:
        quality = evaluation.quality_report(arrays["features"], arrays["logits"], ref.stats,
                                            seed=o.seed)
    quality = {k: (None if v is None else float(v)) for k, v in quality.items()}
    bad = [k for k, v in quality.items() if v is not None and not np.isfinite(v)]
    if bad:
        raise ValueError(f"the metrics {bad} of {out_dir} are not finite: the samples or the "
                         "reference statistics are degenerate; check them.")
    quality["num_samples"] = n
    extra = dict(o.cond.record())
    if o.cond.classes is not None and s.data.name.upper() == "DIGITS":
        labels = image_labels(o.cond.classes, range(n))  # image i's class, as generated
        acc = evaluation.class_accuracy(common.floats(arrays["samples"]), labels)
        extra["class_accuracy"] = quality["class_accuracy"] = acc
    seconds = sum(res.seconds)
    result = {**common.header("eval", step=step, seed=o.seed, options=o, seconds=seconds),
              "quality": quality, "reference": ref.description,
              "grid": os.path.join(out_dir, "grid.png"), "num_samples": n, "step": step,
              **(ref.features or {"features": None, "preprocess": None}),
              "sampler": o.sampler.record(), "nfe": res.nfe, "rounds": out_dir,
              "seconds_per_sample": seconds / n, **extra}
    if distributed.is_main_process():
        save_samples(common.floats(arrays["samples"][:GRID_MAX]), result["grid"])
        common.write_results(os.path.join(out_dir, "results.json"), result)
        log.info("eval: %s against %s (written to %s)", quality, ref.description, out_dir)
    return result
