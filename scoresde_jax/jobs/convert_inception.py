"""``scoresde convert-inception``: the FID Inception-v3 weights
(``pt_inception-2015-12-05-6726825d.pth``, pytorch-fid / torch-fidelity's public file) as the
``.npz`` that ``eval`` and ``stats`` read (:func:`scoresde_jax.evaluation.convert_weights`)."""

from __future__ import annotations

from scoresde_jax.evaluation import convert_weights


def convert_inception(src: str, out: str) -> dict:
    """Convert ``src`` into ``out``; returns ``{'inception': out}``."""
    return {"inception": convert_weights(src, out)}
