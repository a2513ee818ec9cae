"""``scoresde fid``: FID / IS / KID of any folder (or zip) of images against a reference, as
EDM's ``fid.py calc``; no config, no workdir.

    scoresde fid --images runs/x/samples/png --ref cifar10_stats.npz --inception inception_fid.npz
    scoresde fid --images samples/ --ref my_images/ --features digits

``--ref`` is a statistics file (``scoresde stats``, score_sde's ``assets/stats``) or a folder /
zip of reference images, whose features are computed the same way. Images are read by the
folder dataset (:mod:`scoresde_jax.data.folder`: PNG / JPEG / WebP, bad files named or skipped
with ``--skip_bad_files``) at the size of each set's first image (``--image_size`` overrides;
other sizes are center-cropped and resized), as uint8 pixels, through the feature network of
:func:`~scoresde_jax.evaluation.reference.feature_network`: the FID Inception-v3 (``--inception``,
RGB; grayscale repeated) or the digits classifier (``--features digits``, grayscale).

Features are computed in resumable rounds under ``<out>.rounds/<set>_<digest>/`` (the digest
of their record: the images' listing, size, count and feature network, so other inputs never
reuse them). The results file (``--out``, default ``fid.json``) starts with the jobs' common
header (``job``, ``step`` (None), ``seed``, ``options``, ``seconds``, ``version``) and holds the
metrics, both sets (path, listing digest, count, size, bad files left out) and the features.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, NamedTuple

import numpy as np

from scoresde_jax import evaluation
from scoresde_jax.data.folder import index_folder
from scoresde_jax.data.folder_source import FolderSource
from scoresde_jax.data.spec import DataSpec, stored_pixels
from scoresde_jax.jobs import common
from scoresde_jax.jobs.arguments import FEATURES
from scoresde_jax.jobs.rounds import record_digest, run_rounds

log = logging.getLogger("scoresde_jax.jobs")


class FidOptions(NamedTuple):
    """The options of :func:`fid` (the command line's values)."""

    images: str
    ref: str
    out: str = "fid.json"
    features: str = "inception"
    inception_path: str | None = None
    preprocess: str = "score_sde"
    batch_size: int = 250
    num_images: int | None = None
    image_size: int | None = None
    skip_bad_files: bool = False
    seed: int = 0
    progress: bool = True


def _read_set(path: str, o: FidOptions, net: Any, net_tag: str, channels: int, which: str,
              num: int | None) -> tuple[dict, dict]:
    """``({'features', 'logits'}, description)`` of every image of the folder / zip ``path``."""
    index = index_folder(path, skip_bad_files=o.skip_bad_files, progress=o.progress)
    size = o.image_size
    if not size:
        h, w = FolderSource(index, image_size=0, num_channels=channels)[0]["image"].shape[:2]
        size = min(h, w)
    total = len(index) if num is None else min(len(index), int(num))
    if total < 2:
        raise ValueError(f"{which} {index.path} has {total} image(s); FID needs at least 2.")
    bs = max(1, min(int(o.batch_size), total))
    spec = DataSpec("folder", options={"path": index.path, "image_size": size,
                                       "num_channels": channels,
                                       "skip_bad_files": o.skip_bad_files})
    _, read = spec.split_reader("train", batch_size=bs, num_examples=total)

    def make_round(k: int, n: int) -> dict:
        feats, logits = net(stored_pixels(read(k, n)))
        return {"features": np.asarray(feats, np.float32), "logits": np.asarray(logits, np.float32)}

    record = {"job": "fid", "set": which, "path": index.path, "listing": index.key,
              "image_size": size, "num_channels": channels, "num_images": total,
              "features": net_tag, "skip_bad_files": o.skip_bad_files}
    out_dir = os.path.join(os.path.splitext(os.path.abspath(o.out))[0] + ".rounds",
                           f"{which}_{record_digest(record)}")
    arrays = run_rounds(out_dir, num_items=total, batch_size=bs, make_round=make_round,
                        record=record, desc=f"fid {which}", progress=o.progress)
    return arrays, {"path": index.path, "listing": index.key, "num_images": total,
                    "image_size": size, "bad_files": [rel for rel, _ in index.bad]}


def fid(images: str, ref: str, **options: Any) -> dict:
    """FID / IS / KID of the images at ``images`` against ``ref`` (module docstring); options
    are the fields of :class:`FidOptions`. Returns (and writes to ``options.out``) ``{'quality':
    {'fid', 'inception_score', 'inception_score_10', 'inception_score_10_std', 'kid'},
    'images', 'reference', 'features', 'preprocess', 'options', 'seconds'}``."""
    o = FidOptions(images, ref, **{k: v for k, v in options.items() if v is not None})
    if o.features not in FEATURES:
        raise ValueError(f"--features {o.features!r}: use one of {FEATURES}.")
    t0 = time.perf_counter()
    digits = o.features == "digits"
    ref_file = os.path.isfile(o.ref) and o.ref.lower().endswith(".npz")
    stats = evaluation.load_reference(o.ref) if ref_file else None
    net, info = evaluation.feature_network("DIGITS" if digits else "folder",
                                           inception_path=o.inception_path,
                                           preprocess=o.preprocess, batch_size=o.batch_size)
    net_tag = f"{info['features']}|{info['preprocess']}"
    channels = 1 if digits else 3
    arrays, images_info = _read_set(o.images, o, net, net_tag, channels, "images", o.num_images)
    if stats is None:
        if not os.path.exists(o.ref):
            raise FileNotFoundError(f"--ref {o.ref} does not exist; pass a statistics .npz "
                                    "(scoresde stats) or a folder / zip of reference images.")
        ref_arrays, ref_info = _read_set(o.ref, o, net, net_tag, channels, "ref", None)
        stats = evaluation.reference.reference_from_features(ref_arrays["features"])
        reference = {"images": ref_info}
    else:
        reference = {"stats": os.path.abspath(o.ref), "num_images": stats.count}
    quality = evaluation.quality_report(arrays["features"], arrays["logits"], stats, seed=o.seed)
    quality = {k: (None if v is None else float(v)) for k, v in quality.items()}
    result = {**common.header("fid", step=None, seed=o.seed, options=o,
                              seconds=time.perf_counter() - t0),
              "quality": quality, "images": images_info, "reference": reference, **info,
              "out": os.path.abspath(o.out)}
    common.write_results(o.out, result)
    log.info("fid: %s (written to %s)", quality, o.out)
    return result
