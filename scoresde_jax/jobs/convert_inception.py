"""``scoresde convert-inception``: the FID Inception-v3 weights
(``pt_inception-2015-12-05-6726825d.pth``, pytorch-fid / torch-fidelity's public file) as the
``.npz`` that ``eval`` and ``stats`` read (:func:`scoresde_jax.evaluation.convert_weights`)."""

from __future__ import annotations

import argparse

from scoresde_jax.evaluation import convert_weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="pt_inception-2015-12-05-6726825d.pth (or its .npz)")
    p.add_argument("--out", default="inception_fid.npz",
                   help="output .npz (default inception_fid.npz)")


def convert_inception(src: str, out: str) -> dict:
    """Convert ``src`` into ``out``; returns ``{'inception': out}``."""
    return {"inception": convert_weights(src, out)}
