"""An MLP score model (continuous sub-VP SDE) on the 2-D ``TOY_CHECKERBOARD`` mixture; minutes on CPU.

``configs/toy_8gaussians.py`` with the checkerboard (8 dark unit squares on [-2, 2]^2, each a 3x3
grid of Gaussians), the sub-VP SDE, a wider MLP and 4000 steps. ``scoresde train --config
configs/toy_checkerboard.py --workdir runs/toy_checkerboard``.
"""

from __future__ import annotations

import ml_collections

from configs.toy_8gaussians import get_config as get_toy_config


def get_config() -> ml_collections.ConfigDict:
    config = get_toy_config()
    config.training.sde = "subvpsde"
    config.training.n_iters = 4000
    config.data.dataset = "TOY_CHECKERBOARD"
    config.model.hidden_sizes = (256, 256, 256)
    return config
