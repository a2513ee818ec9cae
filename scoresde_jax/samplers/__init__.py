"""Samplers: predictor-corrector, probability-flow ODE and fast few-step solvers, as pure jitted
functions.

Every sampler has the signature ``sampler(score_fn, sde, shape, rng, **options) -> SampleResult(x,
nfe)`` and is listed by name in :data:`SAMPLERS`; :func:`get_sampling_fn` builds one from an
official-layout config. Compilation caching (pass parameters with ``jax.tree_util.Partial``, or use
:func:`get_pc_sampler`) is described in :mod:`scoresde_jax.samplers.pc`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

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
    dpm_solver_pp_sample,
    heun_sample,
    time_grid,
)
from scoresde_jax.samplers.ode import ODE_SOLVERS, ode_sample, solver_nfe
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
    "data_prediction",
    "time_grid",
    "as_score_pytree",
    "get_sampling_fn",
    "sliced_wasserstein",
    "predictors",
    "correctors",
    "common",
]

SAMPLERS: dict[str, Callable[..., SampleResult]] = {
    "pc": pc_sample,
    "ode": ode_sample,
    "ddim": ddim_sample,
    "dpm_solver_pp": dpm_solver_pp_sample,
    "heun": heun_sample,
}
"""Samplers by name (``config.sampling.method``)."""


def _get(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.key`` if present (ml_collections ConfigDict, dataclass, namespace or dict), else
    ``default``."""
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def get_sampling_fn(
    config: Any, sde, shape: Sequence[int], eps: float
) -> Callable[..., SampleResult]:
    """``sample(rng, score_fn, x_init=None) -> SampleResult`` for an official-layout config.

    Reads ``config.sampling.method`` (a key of :data:`SAMPLERS`) and, per method:

    * ``pc``: ``predictor``, ``corrector``, ``snr``, ``n_steps_each``, ``noise_removal``,
      ``probability_flow``;
    * ``ode``: ``noise_removal`` and the optional ``rtol``, ``atol`` (1e-5), ``ode_solver``
      ('tsit5');
    * ``ddim``: optional ``num_steps`` (50), ``eta`` (0), ``noise_removal``;
    * ``dpm_solver_pp``: optional ``num_steps`` (20), ``noise_removal``;
    * ``heun``: optional ``num_steps`` (18), ``noise_removal``.

    ``eps`` is the sampling epsilon (the second value of :func:`scoresde_jax.sde.get_sde`).
    ``score_fn`` may be a plain callable or a ``jax.tree_util.Partial`` carrying parameters
    (compiled once per score function).
    """
    sampling = getattr(config, "sampling", None)
    if sampling is None:
        raise ValueError(
            "config has no `sampling` section; see configs/default_cifar10_configs.py."
        )
    method = str(_get(sampling, "method", "pc")).lower()
    if method not in SAMPLERS:
        raise ValueError(
            f"Unknown config.sampling.method={method!r}; use one of {sorted(SAMPLERS)}."
        )
    denoise = bool(_get(sampling, "noise_removal", True))
    if method == "pc":
        options = dict(
            predictor=_get(sampling, "predictor", "reverse_diffusion"),
            corrector=_get(sampling, "corrector", "langevin"),
            snr=float(_get(sampling, "snr", 0.16)),
            n_steps=int(_get(sampling, "n_steps_each", 1)),
            probability_flow=bool(_get(sampling, "probability_flow", False)),
        )
        # Fail on unknown names now, not at the first sample.
        for table, name, kind in (
            (PREDICTORS, options["predictor"], "predictor"),
            (CORRECTORS, options["corrector"], "corrector"),
        ):
            if not callable(name) and str(name).lower() not in table:
                raise ValueError(
                    f"Unknown config.sampling.{kind}={name!r}; use one of {sorted(table)}."
                )
    elif method == "ode":
        options = dict(
            rtol=float(_get(sampling, "rtol", 1e-5)),
            atol=float(_get(sampling, "atol", 1e-5)),
            solver=_get(sampling, "ode_solver", "tsit5"),
        )
        if not isinstance(options["solver"], str) or options["solver"].lower() not in ODE_SOLVERS:
            raise ValueError(
                f"Unknown config.sampling.ode_solver={options['solver']!r}; use one of "
                f"{sorted(ODE_SOLVERS)}."
            )
    elif method == "ddim":
        options = dict(
            num_steps=int(_get(sampling, "num_steps", 50)), eta=float(_get(sampling, "eta", 0.0))
        )
    elif method == "dpm_solver_pp":
        options = dict(num_steps=int(_get(sampling, "num_steps", 20)))
    else:
        options = dict(num_steps=int(_get(sampling, "num_steps", 18)))
    fn = SAMPLERS[method]
    shape = tuple(int(s) for s in shape)

    def sample(rng: jax.Array, score_fn, x_init: jax.Array | None = None) -> SampleResult:
        return fn(score_fn, sde, shape, rng, denoise=denoise, eps=eps, x_init=x_init, **options)

    return sample
