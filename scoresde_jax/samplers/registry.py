"""The samplers by name: ``config.sampling.method``, ``scoresde sample --method`` and the
``method`` of :func:`scoresde_jax.samplers.sample`.

Each entry is the :class:`~scoresde_jax.samplers.common.Sampler` record that the sampler's own
module defines (its function, its plan for a budget of score evaluations and its config keys);
adding a sampler is one module and one line here.
"""

from __future__ import annotations

from scoresde_jax.samplers import adaptive, exponential, karras, pc, unipc
from scoresde_jax.samplers.common import Sampler

__all__ = ["SAMPLERS"]

SAMPLERS: dict[str, Sampler] = {
    "pc": pc.PC,
    "ode": adaptive.ODE,
    "ddim": exponential.DDIM,
    "dpm_solver_pp": exponential.DPM_SOLVER_PP,
    "dpm_solver_pp_3m": exponential.DPM_SOLVER_PP_3M,
    "dpm_solver_pp_2s": exponential.DPM_SOLVER_PP_2S,
    "unipc": unipc.UNIPC,
    "heun": karras.HEUN,
    "edm": karras.EDM,
    "adaptive_sde": adaptive.ADAPTIVE_SDE,
}
"""Sampler records by name; ``SAMPLERS[name].fn(score_fn, sde, shape, rng, **options) ->
SampleResult(x, nfe)``."""
