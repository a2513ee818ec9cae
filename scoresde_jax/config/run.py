"""Config -> the official score_sde builders of a run: the optimizer (``get_optimizer``), the
training objective (``get_loss_fn``), the sampler (``get_sampling_fn``) and the likelihood
(``get_likelihood_fn``).

Part of the config boundary (:mod:`scoresde_jax.config`); a key the config does not set is not
passed, so the signature of the function it configures holds the only default.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import optax

from scoresde_jax import likelihood, losses, samplers
from scoresde_jax import sde as sde_lib
from scoresde_jax.config.components import given_keys, section_of, is_vector_data
from scoresde_jax.jobs.generate import SamplerSpec
from scoresde_jax.models import NoiseConditionalClassifier
from scoresde_jax.parameterization import get_model_fn, get_score_fn
from scoresde_jax.training.optimizer import make_optimizer

# --- optimization and the training objective -------------------------------------------------------

_OPTIM_KEYS = ("optimizer", "lr", "warmup", "grad_clip", "beta1", "eps", "weight_decay")


def get_optimizer(config: Any) -> optax.GradientTransformation:
    """The optax chain of ``config.optim`` (clip -> Adam with warmup; ``optax.MultiSteps`` when
    ``config.training.grad_accum_steps > 1``)."""
    kwargs = given_keys(section_of(config, "optim"), _OPTIM_KEYS)
    kwargs.update(given_keys(section_of(config, "training"), ("grad_accum_steps",)))
    return make_optimizer(**kwargs)


def get_loss_fn(config: Any, s: Any, *, train: bool) -> Callable:
    """``loss_fn(params, batch, rng) -> (loss, aux)`` of ``config.training`` (continuous,
    likelihood_weighting, reduce_mean, eps; loss, P_mean, P_std for EDM's loss) for the setup's SDE and model; for a classifier
    (``config.model.name='classifier'``) the cross-entropy on perturbed data (training.eps)."""
    if isinstance(s.model, NoiseConditionalClassifier):
        return losses.get_classifier_loss_fn(
            s.sde, s.model, train=train, **given_keys(section_of(config, "training"), ("eps",)))
    kwargs = given_keys(section_of(config, "training"),
                        ("continuous", "likelihood_weighting", "reduce_mean", "eps", "loss", "P_mean",
                         "P_std"))
    return losses.get_loss_fn(s.sde, s.model, train=train, **kwargs)


# --- sampling --------------------------------------------------------------------------------------

def sampler_options(config: Any, method: str | None = None) -> tuple[str, dict]:
    """``(method, options)`` of ``config.sampling``: the method (``method`` if given, else
    ``config.sampling.method``, a key of ``samplers.SAMPLERS``, default 'pc') and the keyword
    options the config sets for it (the sampler record's ``config_keys``), ``noise_removal`` as
    ``denoise``."""
    s = section_of(config, "sampling")
    where = "sampling method" if method is not None else "config.sampling.method"
    method = str(method if method is not None else s.get("method", "pc")).lower()
    if method not in samplers.SAMPLERS:
        raise ValueError(f"Unknown {where}={method!r}; use one of {sorted(samplers.SAMPLERS)}.")
    keys = samplers.SAMPLERS[method].config_keys
    options = given_keys(s, {"denoise": "noise_removal", **keys})
    tables = {"predictor": samplers.PREDICTORS, "corrector": samplers.CORRECTORS,
              "solver": samplers.ODE_SOLVERS}
    for arg, table in tables.items():
        value = options.get(arg)
        if isinstance(value, str) and value.lower() not in table:
            key = keys[arg]
            raise ValueError(f"Unknown config.sampling.{key}={value!r}; use one of {sorted(table)}.")
    return method, options


def sampler_spec(config: Any, method: str | None = None, nfe: int | None = None) -> SamplerSpec:
    """The sampler of ``config.sampling`` (``method`` / ``nfe`` override ``sampling.method`` /
    ``sampling.nfe``; a budget replaces the config's step count)."""
    method, options = sampler_options(config, method)
    nfe = nfe if nfe is not None else section_of(config, "sampling").get("nfe")
    if nfe is not None:
        options = {k: v for k, v in options.items() if k not in ("num_steps", "max_nfe")}
        nfe = int(nfe)
    return SamplerSpec(method, options, nfe)


def get_sampling_fn(config: Any, sde: sde_lib.SDE, shape: Sequence[int], eps: float, *,
                    method: str | None = None, nfe: int | None = None
                    ) -> Callable[..., samplers.SampleResult]:
    """``sample(rng, score_fn, x_init=None) -> SampleResult`` with the sampler of
    :func:`sampler_spec` (official ``sampling.get_sampling_fn``); ``eps`` is the sampling epsilon
    of :func:`get_sde`. ``score_fn`` may be a ``jax.tree_util.Partial`` carrying parameters."""
    spec = sampler_spec(config, method, nfe)
    shape = tuple(int(s) for s in shape)

    def sample(rng: jax.Array, score_fn, x_init: jax.Array | None = None):
        return samplers.sample(score_fn, sde, shape, rng, method=spec.method, nfe=spec.nfe,
                               eps=eps, x_init=x_init, **spec.options)

    return sample


# --- likelihood ---------------------------------------------------------------------------------


def get_likelihood_fn(config: Any, s: Any, *, bits: bool = True) -> Callable:
    """``likelihood_fn(params, x, rng) -> BPDResult`` of the setup's model on scaled data, with the
    bits/dim offset of ``config.data.centered`` (none for vector data) and
    ``config.data.uniform_dequantization``; ``bits=False``: ``LikelihoodResult`` in nats."""
    d = section_of(config, "data")
    vector = is_vector_data(config)
    return likelihood.get_likelihood_fn(
        s.sde, lambda p: get_score_fn(s.sde, get_model_fn(s.model, p), continuous=s.continuous),
        centered=bool(d.centered), bits=bits, offset=0.0 if vector else None,
        dequantize=not vector and bool(d.get("uniform_dequantization", False)))
