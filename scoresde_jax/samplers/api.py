"""The front door of sampling: :func:`sample` runs any sampler of :data:`SAMPLERS` by name, under
an optional budget of score evaluations.

``nfe`` is a budget, not a target: each method turns it into its own step count
(:data:`STEPS_FOR_NFE`) so that the evaluations it spends -- ``SampleResult.nfe``, denoising
included -- never exceed it:

==================================  ===========================================================
method                              steps for a budget ``nfe`` (``d = 1`` with denoising, else 0)
==================================  ===========================================================
ddim, dpm_solver_pp (2M), _3m,      ``num_steps = nfe - d + 1`` grid points (one evaluation per
unipc                               step)
dpm_solver_pp_2s, heun, edm         ``num_steps = (nfe - d) // 2 + 1`` (two per step)
pc                                  ``N = nfe // (predictor + n_steps corrector evaluations)``
                                    levels (``sde.N`` replaced; denoising is free)
adaptive_sde                        ``max_nfe = nfe`` (the error control works inside it)
ode                                 no budget: adaptive (``rtol``/``atol``); raises
==================================  ===========================================================
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax

from scoresde_jax.samplers.common import SampleResult, lookup_step_fn
from scoresde_jax.samplers.correctors import CORRECTORS
from scoresde_jax.samplers.fast import ddim_sample, dpm_solver_pp_sample, heun_sample
from scoresde_jax.samplers.multistep import (
    dpm_solver_pp_2s_sample,
    dpm_solver_pp_3m_sample,
    unipc_sample,
)
from scoresde_jax.samplers.ode import ode_sample
from scoresde_jax.samplers.pc import pc_sample
from scoresde_jax.samplers.predictors import PREDICTORS
from scoresde_jax.samplers.stochastic import adaptive_sde_sample, edm_sample
from scoresde_jax.sde import SDE

__all__ = ["SAMPLERS", "STEPS_FOR_NFE", "sample", "options_for_nfe"]

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "pc": pc_sample,
    "ode": ode_sample,
    "ddim": ddim_sample,
    "dpm_solver_pp": dpm_solver_pp_sample,
    "dpm_solver_pp_3m": dpm_solver_pp_3m_sample,
    "dpm_solver_pp_2s": dpm_solver_pp_2s_sample,
    "unipc": unipc_sample,
    "heun": heun_sample,
    "edm": edm_sample,
    "adaptive_sde": adaptive_sde_sample,
}
"""Samplers by name (``config.sampling.method``, ``scoresde sample --method``); each has the
signature ``fn(score_fn, sde, shape, rng, **options) -> SampleResult(x, nfe)``."""


def _one_per_step(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    return {"num_steps": nfe - d + 1}, sde


def _two_per_step(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    return {"num_steps": (nfe - d) // 2 + 1}, sde


def _pc_levels(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    pred = lookup_step_fn(PREDICTORS, options.get("predictor", "reverse_diffusion"), "predictor")
    corr = lookup_step_fn(CORRECTORS, options.get("corrector", "langevin"), "corrector")
    per_level = getattr(pred, "nfe", 1) + int(options.get("n_steps", 1)) * getattr(corr, "nfe", 1)
    levels = nfe // max(per_level, 1)
    if levels < 1:
        raise ValueError(f"nfe={nfe} is below one PC level ({per_level} evaluations).")
    return {}, dataclasses.replace(sde, N=levels)


def _adaptive_budget(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    return {"max_nfe": nfe}, sde


def _no_budget(nfe: int, d: int, options: dict, sde: SDE) -> tuple[dict, SDE]:
    raise ValueError("method 'ode' is adaptive (it takes rtol/atol, not an nfe budget); use a "
                     "fixed-step method (e.g. 'dpm_solver_pp_3m', 'unipc') or 'adaptive_sde' with "
                     "nfe, or drop nfe.")


STEPS_FOR_NFE: dict[str, Callable[[int, int, dict, SDE], tuple[dict, SDE]]] = {
    "pc": _pc_levels,
    "ode": _no_budget,
    "ddim": _one_per_step,
    "dpm_solver_pp": _one_per_step,
    "dpm_solver_pp_3m": _one_per_step,
    "unipc": _one_per_step,
    "dpm_solver_pp_2s": _two_per_step,
    "heun": _two_per_step,
    "edm": _two_per_step,
    "adaptive_sde": _adaptive_budget,
}
"""``plan(nfe, d, options, sde) -> (step options, sde)`` per method (module docstring)."""

_STEP_KEYS = ("num_steps", "max_nfe")


def options_for_nfe(method: str, nfe: int, sde: SDE, *, denoise: bool = True,
                    **options: Any) -> tuple[dict, SDE]:
    """The step options (and SDE, with ``N`` replaced for PC) of ``method`` for a budget of
    ``nfe`` score evaluations; ``options`` are the method's other options."""
    if method not in SAMPLERS:
        raise ValueError(f"Unknown sampling method {method!r}; use one of {sorted(SAMPLERS)}.")
    if int(nfe) != nfe or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}.")
    clash = [k for k in _STEP_KEYS if k in options]
    if clash:
        raise ValueError(f"pass either nfe or {clash[0]}, not both: nfe sets the step count.")
    plan, sde = STEPS_FOR_NFE[method](int(nfe), int(bool(denoise)), options, sde)
    if plan.get("num_steps", 2) < 2:
        raise ValueError(f"nfe={nfe} is too small for {method!r}: it needs at least "
                         f"{_min_nfe(method, denoise)} evaluations (one step).")
    return plan, sde


def _min_nfe(method: str, denoise: bool) -> int:
    return (2 if STEPS_FOR_NFE[method] is _two_per_step else 1) + int(bool(denoise))


def sample(
    score_fn: Callable | Any,
    sde: SDE,
    shape: Sequence[int],
    rng: jax.Array,
    *,
    method: str = "pc",
    nfe: int | None = None,
    x_init: jax.Array | None = None,
    denoise: bool = True,
    **options: Any,
) -> SampleResult:
    """Samples of shape ``shape`` from ``score_fn(x, t)`` under ``sde`` with the sampler ``method``
    (a key of :data:`SAMPLERS`).

    ``nfe`` is a budget of score evaluations: the method picks its step count so that
    ``SampleResult.nfe`` (denoising included) never exceeds it (see the module table); without it
    the method's own defaults (or ``num_steps`` etc. in ``options``) apply.  ``options`` are the
    keyword options of the method (e.g. ``eta``, ``grid``, ``order``, ``S_churn``, ``rtol``);
    ``x_init`` is the state at ``T`` (default: a prior draw with ``rng``).  Every method compiles
    once per (score function, SDE, shape, static options).
    """
    method = str(method).lower()
    if method not in SAMPLERS:
        raise ValueError(f"Unknown sampling method {method!r}; use one of {sorted(SAMPLERS)}.")
    if nfe is not None:
        plan, sde = options_for_nfe(method, nfe, sde, denoise=denoise, **options)
        options = {**options, **plan}
    return SAMPLERS[method](score_fn, sde, shape, rng, x_init=x_init, denoise=denoise, **options)
