"""Long jobs in resumable rounds (sampling 50,000 images, evaluating them, a likelihood over a test
split), each folder tied to the record of what made it.

A job of ``num_items`` is cut into rounds of ``batch_size``; round ``k`` computes a dict of numpy
arrays (``make_round(k, n)`` with ``n`` items, the last round possibly shorter) which is written to
``<out_dir>/round_<k>.npz`` atomically (a temporary file of this process renamed once complete). A
restarted job loads the rounds already on disk and computes only the missing ones, so a killed job
loses at most one round, and an unbroken and a resumed job give the same arrays when
``make_round`` draws its randomness from ``k``.

``<out_dir>/rounds.json`` holds the job's *record*: everything that made the rounds (the resolved
config, the checkpoint step and digest, the job's options, the seed, the library version) and the
shape and dtype of each array. It is written with the first computed round, so a run refused
before any work leaves nothing behind. A rerun whose record differs in any key refuses in one line
naming the keys (or, with ``overwrite``, deletes the old rounds); a round file of the wrong
length, shape or dtype, a damaged one, or one holding NaN/inf is recomputed.

Only the main process writes; every process computes (the rounds are sharded over all devices by
the caller).
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from tqdm import tqdm

from scoresde_jax.training import distributed

log = logging.getLogger("scoresde_jax.jobs")

__all__ = ["RECORD_FILE", "record_digest", "record_differences", "round_path", "run_rounds"]

RECORD_FILE = "rounds.json"


def round_path(out_dir: str, k: int) -> str:
    return os.path.join(out_dir, f"round_{k:05d}.npz")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, Mapping):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def record_differences(old: Mapping, new: Mapping) -> list[str]:
    """The dotted keys whose values differ between two records."""
    a = _flat(json.loads(json.dumps(old, default=str)))
    b = _flat(json.loads(json.dumps(new, default=str)))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def record_digest(record: Mapping) -> str:
    """A short hex digest of a record (folder names)."""
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _save(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _spec(arrays: Mapping[str, np.ndarray]) -> dict:
    return {k: [list(v.shape[1:]), v.dtype.str] for k, v in arrays.items()}


def _load(path: str, n: int, spec: Mapping | None) -> dict[str, np.ndarray] | None:
    """A finished round, or None when it is damaged, of another size, shape or dtype, or holds
    NaN/inf (it is then recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated or corrupt
        log.warning("Recomputing %s: %s", path, e)
        return None
    problem = None
    if spec is None or set(arrays) != set(spec):
        problem = f"it holds {sorted(arrays)}, expected {sorted(spec or {})}"
    elif any(len(v) != n for v in arrays.values()):
        problem = "it holds a round of another size"
    elif _spec(arrays) != {k: [list(s), d] for k, (s, d) in spec.items()}:
        problem = "its arrays have another shape or dtype"
    elif any(v.dtype.kind in "fc" and not np.isfinite(v).all() for v in arrays.values()):
        problem = "it holds NaN or inf"
    if problem:
        log.warning("Recomputing %s: %s.", path, problem)
        return None
    return arrays


def _existing(out_dir: str, record: Mapping | None, overwrite: bool) -> dict | None:
    """The saved ``rounds.json`` of ``out_dir`` when it matches ``record`` (else an error, or
    with ``overwrite`` the old rounds are deleted and None returned)."""
    path = os.path.join(out_dir, RECORD_FILE)
    rounds = glob.glob(os.path.join(out_dir, "round_*.npz"))
    saved = None
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is damaged ({e}); delete it (and the rounds beside it) or "
                             "pass --overwrite.") from None
    elif rounds:
        saved = {"record": None}
    if saved is None:
        return None
    diff = record_differences(saved.get("record") or {}, record or {})
    if not diff:
        return saved
    if overwrite:
        if distributed.is_main_process():
            for f in rounds + [path]:
                os.remove(f)
        log.info("Deleted the rounds of another run in %s (--overwrite).", out_dir)
        return None
    shown = ", ".join(diff[:6]) + (f" and {len(diff) - 6} more" if len(diff) > 6 else "")
    raise ValueError(f"{out_dir} holds rounds of another run (differs in {shown}); pass --out to "
                     "write elsewhere or --overwrite to recompute them.")


def run_rounds(out_dir: str, *, num_items: int, batch_size: int,
               make_round: Callable[[int, int], Mapping[str, np.ndarray]],
               record: Mapping | None = None, overwrite: bool = False,
               desc: str = "rounds", progress: bool = True) -> dict[str, np.ndarray]:
    """Run (or resume) ``ceil(num_items / batch_size)`` rounds of ``make_round(k, n)`` and return
    their arrays concatenated along axis 0 (``num_items`` rows each). Rounds found valid in
    ``out_dir`` under the same ``record`` are reused (module docstring)."""
    if num_items < 1 or batch_size < 1:
        raise ValueError(f"num_items={num_items} and batch_size={batch_size} must be >= 1.")
    main = distributed.is_main_process()
    saved = _existing(out_dir, record, overwrite) if os.path.isdir(out_dir) else None
    spec = (saved or {}).get("arrays")
    n_rounds = -(-num_items // batch_size)
    results: list[Mapping[str, np.ndarray]] = []
    reused, t0 = 0, time.perf_counter()
    bar = tqdm(total=num_items, unit="item", desc=desc, dynamic_ncols=True, mininterval=1.0,
               disable=not (progress and main))
    try:
        for k in range(n_rounds):
            n = min(batch_size, num_items - k * batch_size)
            path = round_path(out_dir, k)
            arrays = _load(path, n, spec) if spec is not None and os.path.exists(path) else None
            if arrays is None:
                arrays = {key: np.asarray(v) for key, v in make_round(k, n).items()}
                if main:
                    if spec is None:
                        spec = _spec(arrays)
                        os.makedirs(out_dir, exist_ok=True)
                        _write_record(out_dir, {"record": record, "arrays": spec})
                    _save(path, arrays)
            else:
                reused += 1
            results.append(arrays)
            bar.update(n)
    finally:
        bar.close()
    log.info("%s: %d round(s) computed in %.1f s, %d reused from %s.", desc, n_rounds - reused,
             time.perf_counter() - t0, reused, out_dir)
    return {key: np.concatenate([r[key] for r in results]) for key in results[0]}


def _write_record(out_dir: str, content: Mapping) -> None:
    path = os.path.join(out_dir, RECORD_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=1, default=str)
    os.replace(tmp, path)
