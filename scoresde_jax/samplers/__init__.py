"""Samplers: predictor-corrector, probability-flow ODE and fast few-step solvers, as pure jitted
functions.

The front door is :func:`sample` (:mod:`scoresde_jax.samplers.api`): any sampler by name, with an
optional budget ``nfe`` of score evaluations.  Every sampler has the signature ``sampler(score_fn, sde, shape, rng, **options) -> SampleResult(x,
nfe)`` and is listed by name in :data:`SAMPLERS`; ``scoresde_jax.config.get_sampling_fn`` builds one from an official-layout
config, passing only the options the config sets: the defaults are those of the signatures here.
Compilation caching (pass parameters with ``jax.tree_util.Partial``, or use :func:`get_pc_sampler`)
is described in :mod:`scoresde_jax.samplers.pc`.
"""

from __future__ import annotations

from scoresde_jax.analytic import sliced_wasserstein
from scoresde_jax.samplers import common, correctors, predictors
from scoresde_jax.samplers.correctors import (
    CORRECTORS,
    annealed_langevin,
    corrector_alpha,
    langevin,
)
from scoresde_jax.samplers.correctors import none as none_corrector
from scoresde_jax.samplers.fast import (
    TIME_GRIDS,
    data_prediction,
    ddim_sample,
    default_grid,
    dpm_solver_pp_sample,
    heun_sample,
    time_grid,
)
from scoresde_jax.samplers.multistep import (
    dpm_solver_pp_2s_sample,
    dpm_solver_pp_3m_sample,
    unipc_sample,
)
from scoresde_jax.samplers.ode import ODE_SOLVERS, ode_sample, solver_nfe
from scoresde_jax.samplers.stochastic import adaptive_sde_sample, edm_sample
from scoresde_jax.samplers.api import SAMPLERS, STEPS_FOR_NFE, options_for_nfe, sample
from scoresde_jax.samplers.common import SampleResult, as_score_pytree
from scoresde_jax.samplers.pc import get_pc_sampler, pc_sample, resolve_pc_steps
from scoresde_jax.samplers.predictors import (
    PREDICTORS,
    ancestral_sampling,
    chain_coeffs,
    euler_maruyama,
    reverse_diffusion,
)
from scoresde_jax.samplers.predictors import none as none_predictor

__all__ = [
    "SampleResult",
    "PREDICTORS",
    "CORRECTORS",
    "SAMPLERS",
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
    "sample",
    "options_for_nfe",
    "STEPS_FOR_NFE",
    "data_prediction",
    "time_grid",
    "as_score_pytree",
    "sliced_wasserstein",
    "predictors",
    "correctors",
    "common",
]
