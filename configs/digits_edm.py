"""The network of ``digits_ddpmpp.py`` trained and sampled with the EDM recipe (Karras et al. 2022):
the ``sigma(t) = t`` SDE, EDM's preconditioning and loss, Heun with 18 grid points (35 NFE)
(:mod:`configs.edm.edm_recipe`).  Same data, batch, steps and optimizer as ``digits_ddpmpp.py``:
``scoresde train --config configs/digits_edm.py --workdir runs/digits_edm``.
"""

from __future__ import annotations

import ml_collections

from configs.digits_ddpmpp import get_config as get_digits_config
from configs.edm.edm_recipe import apply_edm_recipe


def get_config() -> ml_collections.ConfigDict:
    return apply_edm_recipe(get_digits_config())
