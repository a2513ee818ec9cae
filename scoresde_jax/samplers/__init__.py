"""Samplers: predictor-corrector, probability-flow ODE and fast few-step solvers, as pure jitted
functions.

The front door is :func:`sample` (:mod:`scoresde_jax.samplers.api`): any sampler by name, with an
optional budget ``nfe`` of score evaluations.  Every sampler has the signature ``sampler(score_fn,
sde, shape, rng, **options) -> SampleResult(x, nfe)`` and is registered by name in
:data:`SAMPLERS` (:mod:`scoresde_jax.samplers.registry`) as a :class:`Sampler` record: its function,
its plan for a budget of evaluations and the ``config.sampling`` keys of its options.  The
modules, by family:

* :mod:`~scoresde_jax.samplers.pc` with :mod:`~scoresde_jax.samplers.predictors` and
  :mod:`~scoresde_jax.samplers.correctors` -- predictor-corrector sampling;
* :mod:`~scoresde_jax.samplers.exponential` (DDIM, DPM-Solver++ 2M / 3M / 2S) and
  :mod:`~scoresde_jax.samplers.unipc` -- exponential integrators on a time grid;
* :mod:`~scoresde_jax.samplers.karras` -- Heun and EDM's stochastic sampler;
* :mod:`~scoresde_jax.samplers.adaptive` -- the probability-flow ODE (diffrax) and the adaptive
  reverse SDE ("Gotta Go Fast");
* :mod:`~scoresde_jax.samplers.grid` -- what the grid solvers share (time grids, ``sigma_bar``,
  the data prediction, option checks, budget plans); :mod:`~scoresde_jax.samplers.common` -- what
  every sampler shares (the record, the result, argument checks).

Compilation caching (pass parameters with ``jax.tree_util.Partial``, or use
:func:`get_pc_sampler`) is described in :mod:`scoresde_jax.samplers.pc`.
"""

from __future__ import annotations

from scoresde_jax.analytic import sliced_wasserstein
from scoresde_jax.flow import ODE_SOLVERS, solver_nfe
from scoresde_jax.samplers import common, correctors, grid, predictors
from scoresde_jax.samplers.adaptive import adaptive_sde_sample, ode_sample
from scoresde_jax.samplers.api import options_for_nfe, sample
from scoresde_jax.samplers.common import Sampler, SampleResult, as_score_pytree
from scoresde_jax.samplers.correctors import (
    CORRECTORS,
    annealed_langevin,
    corrector_alpha,
    langevin,
)
from scoresde_jax.samplers.correctors import none as none_corrector
from scoresde_jax.samplers.exponential import (
    ddim_sample,
    dpm_solver_pp_2s_sample,
    dpm_solver_pp_3m_sample,
    dpm_solver_pp_sample,
)
from scoresde_jax.samplers.grid import TIME_GRIDS, data_prediction, default_grid, time_grid
from scoresde_jax.samplers.karras import edm_sample, heun_sample
from scoresde_jax.samplers.pc import get_pc_sampler, pc_sample, resolve_pc_steps
from scoresde_jax.samplers.predictors import (
    PREDICTORS,
    ancestral_sampling,
    chain_coeffs,
    euler_maruyama,
    reverse_diffusion,
)
from scoresde_jax.samplers.predictors import none as none_predictor
from scoresde_jax.samplers.registry import SAMPLERS
from scoresde_jax.samplers.unipc import unipc_sample

__all__ = [
    "Sampler",
    "SampleResult",
    "SAMPLERS",
    "sample",
    "options_for_nfe",
    "PREDICTORS",
    "CORRECTORS",
    "ODE_SOLVERS",
    "TIME_GRIDS",
    "default_grid",
    "euler_maruyama",
    "reverse_diffusion",
    "ancestral_sampling",
    "none_predictor",
    "langevin",
    "annealed_langevin",
    "none_corrector",
    "corrector_alpha",
    "chain_coeffs",
    "pc_sample",
    "get_pc_sampler",
    "resolve_pc_steps",
    "ode_sample",
    "solver_nfe",
    "ddim_sample",
    "dpm_solver_pp_sample",
    "heun_sample",
    "dpm_solver_pp_3m_sample",
    "dpm_solver_pp_2s_sample",
    "unipc_sample",
    "edm_sample",
    "adaptive_sde_sample",
    "data_prediction",
    "time_grid",
    "as_score_pytree",
    "sliced_wasserstein",
    "predictors",
    "correctors",
    "common",
    "grid",
]
