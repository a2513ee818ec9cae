"""Long jobs in resumable rounds: sampling 50,000 images, evaluating them, a likelihood over a
test split.

A job of ``num_items`` is cut into rounds of ``batch_size``; round ``k`` computes a dict of numpy
arrays (``make_round(k, n)`` with ``n`` items, the last round possibly shorter) which is written to
``<out_dir>/round_<k>.npz`` atomically (a temporary file renamed once complete). A restarted job
loads the rounds already on disk and computes only the missing ones, so a killed job loses at most
one round and an unbroken and a resumed job give the same arrays when ``make_round`` draws its
randomness from ``k`` (``jax.random.fold_in(key, k)``). Only the main process writes; every process
computes (the rounds are sharded over all devices by the caller).
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Callable, Mapping

import numpy as np
from tqdm import tqdm

from scoresde_jax.training import distributed

log = logging.getLogger("scoresde_jax.jobs")

__all__ = ["round_path", "run_rounds"]


def round_path(out_dir: str, k: int) -> str:
    return os.path.join(out_dir, f"round_{k:05d}.npz")


def _save(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _load(path: str, n: int) -> dict[str, np.ndarray] | None:
    """A finished round, or None when the file is damaged or of another size (recomputed)."""
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated or corrupt
        log.warning("Recomputing %s: %s", path, e)
        return None
    if any(len(v) != n for v in arrays.values()):
        log.warning("Recomputing %s: it holds a round of another size.", path)
        return None
    return arrays


def run_rounds(out_dir: str, *, num_items: int, batch_size: int,
               make_round: Callable[[int, int], Mapping[str, np.ndarray]],
               desc: str = "rounds", progress: bool = True) -> dict[str, np.ndarray]:
    """Run (or resume) ``ceil(num_items / batch_size)`` rounds of ``make_round(k, n)`` and return
    their arrays concatenated along axis 0 (``num_items`` rows each). Rounds found complete in
    ``out_dir`` are reused; a damaged or mis-sized round file is recomputed with a warning.
    """
    if num_items < 1 or batch_size < 1:
        raise ValueError(f"num_items={num_items} and batch_size={batch_size} must be >= 1.")
    main = distributed.is_main_process()
    if main:
        os.makedirs(out_dir, exist_ok=True)
    n_rounds = -(-num_items // batch_size)
    results: list[Mapping[str, np.ndarray]] = []
    reused, t0 = 0, time.perf_counter()
    bar = tqdm(total=num_items, unit="item", desc=desc, dynamic_ncols=True, mininterval=1.0,
               disable=not (progress and main))
    try:
        for k in range(n_rounds):
            n = min(batch_size, num_items - k * batch_size)
            path = round_path(out_dir, k)
            arrays = _load(path, n) if os.path.exists(path) else None
            if arrays is None:
                arrays = {key: np.asarray(v) for key, v in make_round(k, n).items()}
                if main:
                    _save(path, arrays)
            else:
                reused += 1
            results.append(arrays)
            bar.update(n)
    finally:
        bar.close()
    computed = n_rounds - reused
    log.info("%s: %d round(s) computed in %.1f s, %d reused from %s.", desc, computed,
             time.perf_counter() - t0, reused, out_dir)
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}
