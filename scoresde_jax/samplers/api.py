"""The front door of sampling: :func:`sample` runs any sampler of
:data:`~scoresde_jax.samplers.registry.SAMPLERS` by name, under an optional budget of score
evaluations.

``nfe`` is a budget, not a target: each sampler's ``plan`` turns it into its own step count so
that the evaluations it spends -- ``SampleResult.nfe``, denoising included -- never exceed it:

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

from typing import Any, Callable, Sequence

import jax

from scoresde_jax.samplers.common import Sampler, SampleResult, StepCallback
from scoresde_jax.samplers.registry import SAMPLERS
from scoresde_jax.sde import SDE

__all__ = ["sample", "options_for_nfe"]

_STEP_KEYS = ("num_steps", "max_nfe")


def _record(method: str) -> Sampler:
    if method not in SAMPLERS:
        raise ValueError(f"Unknown sampling method {method!r}; use one of {sorted(SAMPLERS)}.")
    return SAMPLERS[method]


MAX_NFE = 100_000
"""The largest budget :func:`options_for_nfe` accepts."""


def options_for_nfe(method: str, nfe: int, sde: SDE, *, denoise: bool = True,
                    **options: Any) -> tuple[dict, SDE]:
    """The step options (and SDE, with ``N`` replaced for PC) of ``method`` for a budget of
    ``nfe`` score evaluations; ``options`` are the method's other options."""
    record = _record(method)
    if int(nfe) != nfe or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}.")
    if nfe > MAX_NFE:
        raise ValueError(f"nfe={nfe} is above {MAX_NFE}: a budget that large is a typo rather than "
                         "a sampler setting (the paper's longest sampler, PC with one corrector "
                         "step on N = 1000 levels, uses 2000 evaluations).")
    clash = [k for k in _STEP_KEYS if k in options]
    if clash:
        raise ValueError(f"pass either nfe or {clash[0]}, not both: nfe sets the step count.")
    d = int(bool(denoise))
    plan, sde = record.plan(int(nfe), d, options, sde)
    if plan.get("num_steps", 2) < 2:
        least = next((n for n in range(int(nfe) + 1, int(nfe) + 1000)
                      if record.plan(n, d, options, sde)[0].get("num_steps", 2) >= 2), "more")
        raise ValueError(f"nfe={nfe} is too small for {method!r}: it needs at least {least} "
                         f"evaluations (one step).")
    return plan, sde


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
    callback: StepCallback | None = None,
    **options: Any,
) -> SampleResult:
    """Samples of shape ``shape`` from ``score_fn(x, t)`` under ``sde`` with the sampler ``method``
    (a key of :data:`~scoresde_jax.samplers.registry.SAMPLERS`).

    ``nfe`` is a budget of score evaluations: the method picks its step count so that
    ``SampleResult.nfe`` (denoising included) never exceeds it (see the module table); without it
    the method's own defaults (or ``num_steps`` etc. in ``options``) apply.  ``options`` are the
    keyword options of the method (e.g. ``eta``, ``grid``, ``order``, ``S_churn``, ``rtol``);
    ``x_init`` is the state at ``T`` (default: a prior draw with ``rng``).  Every method compiles
    once per (score function, SDE, shape, static options).  ``callback(info)``, if given, is called
    on the host at each step with ``info = {"i", "t", "x", "denoised"}`` (k-diffusion's convention;
    :mod:`~scoresde_jax.samplers.common`); every method but ``ode`` takes one.
    """
    method = str(method).lower()
    record = _record(method)
    if nfe is not None:
        plan, sde = options_for_nfe(method, nfe, sde, denoise=denoise, **options)
        options = {**options, **plan}
    if callback is not None:
        options = {**options, "callback": callback}
    return record.fn(score_fn, sde, shape, rng, x_init=x_init, denoise=denoise, **options)
