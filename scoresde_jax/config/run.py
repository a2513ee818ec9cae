"""Config -> a run: the optimizer, the train setup and objective, the loop's cadence, the
sampler and the evaluation functions of a config.

Part of the config boundary (:mod:`scoresde_jax.config`); a key the config does not set is not
passed, so the signature of the function it configures holds the only default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scoresde_jax import evaluation, likelihood, losses, samplers
from scoresde_jax import guidance as guidance_lib
from scoresde_jax import sde as sde_lib
from scoresde_jax.config.components import (
    _given,
    _required,
    _section,
    create_model,
    example_shape,
    get_data_inverse_scaler,
    get_sde,
    is_vector_data,
    run_seed,
)
from scoresde_jax.models import NoiseConditionalClassifier
from scoresde_jax.parameterization import get_model_fn, get_score_fn
from scoresde_jax.training import distributed
from scoresde_jax.training.loop import LoopOptions
from scoresde_jax.training.optimizer import make_optimizer
from scoresde_jax.training.state import TrainState, abstract_state, init_state


# --- optimization and the training objective -------------------------------------------------------

_OPTIM_KEYS = ("optimizer", "lr", "warmup", "grad_clip", "beta1", "eps", "weight_decay")


def get_optimizer(config: Any) -> optax.GradientTransformation:
    """The optax chain of ``config.optim`` (clip -> Adam with warmup; ``optax.MultiSteps`` when
    ``config.training.grad_accum_steps > 1``)."""
    kwargs = _given(_section(config, "optim"), _OPTIM_KEYS)
    kwargs.update(_given(_section(config, "training"), ("grad_accum_steps",)))
    return make_optimizer(**kwargs)


class Setup(NamedTuple):
    """What a config turns into, shared by training, sampling and evaluation."""

    sde: sde_lib.SDE
    sampling_eps: float
    model: Any
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    input_shape: tuple[int, ...]  # the global training batch shape
    ema_rate: float
    seed: int
    continuous: bool
    grad_accum_steps: int  # the micro-batches of one step (tx is an optax.MultiSteps when > 1)

    def init_state(self) -> TrainState:
        """The step-0 train state, replicated over the mesh (same on every host)."""
        return init_state(jax.random.PRNGKey(self.seed), self.model, self.tx,
                          example_shape=self.input_shape[1:], ema_rate=self.ema_rate,
                          mesh=self.mesh)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state (for restoring)."""
        return abstract_state(self.model, self.tx, example_shape=self.input_shape[1:],
                              ema_rate=self.ema_rate, mesh=self.mesh)


def setup(config: Any, *, model: Any = None, mesh: jax.sharding.Mesh | None = None) -> Setup:
    """SDE, model, optimizer and mesh of a config, after checking it for the usual mistakes
    (batch sizes against the devices, frequencies against ``n_jitted_steps``, sampler names)."""
    sde, eps = get_sde(config)
    model = model if model is not None else create_model(config)
    mesh = mesh or distributed.make_mesh()
    t = _section(config, "training")
    batch_size = int(t.batch_size)
    distributed.check_batch_size(batch_size, mesh)
    if int(t.get("eval_freq", 0)) > 0 and "eval" in config and "batch_size" in config.eval:
        distributed.check_batch_size(int(config.eval.batch_size), mesh, name="eval.batch_size")
    accum = int(t.get("grad_accum_steps", 1))
    if batch_size % (accum * mesh.devices.size):
        raise ValueError(
            f"training.batch_size={batch_size} must be a multiple of grad_accum_steps ({accum}) x "
            f"devices ({mesh.devices.size}) so every micro-batch splits evenly.")
    loop_options(config)
    if "sampling" in config:
        sampler_options(config)
    m = _section(config, "model")
    return Setup(sde, eps, model, get_optimizer(config), mesh, (batch_size,) + example_shape(config),
                 float(_required(m, "ema_rate", "model", "setup")), run_seed(config),
                 bool(t.get("continuous", True)), accum)


def get_loss_fn(config: Any, s: Setup, *, train: bool) -> Callable:
    """``loss_fn(params, batch, rng) -> (loss, aux)`` of ``config.training`` (continuous,
    likelihood_weighting, reduce_mean, eps) for the setup's SDE and model; for a classifier
    (``config.model.name='classifier'``) the cross-entropy on perturbed data (training.eps)."""
    if is_classifier(s.model):
        return losses.get_classifier_loss_fn(
            s.sde, s.model, train=train, **_given(_section(config, "training"), ("eps",)))
    kwargs = _given(_section(config, "training"),
                    ("continuous", "likelihood_weighting", "reduce_mean", "eps"))
    return losses.get_loss_fn(s.sde, s.model, train=train, **kwargs)


def is_classifier(model: Any) -> bool:
    """True for the noise-conditional classifier (trained by the classifier objective)."""
    return isinstance(model, NoiseConditionalClassifier)


_LOOP_KEYS = tuple(f.name for f in dataclasses.fields(LoopOptions))


def loop_options(config: Any) -> LoopOptions:
    """The training loop's cadence from ``config.training`` (checked by ``LoopOptions``)."""
    t = _section(config, "training")
    return LoopOptions(**{k: int(v) for k, v in _given(t, _LOOP_KEYS).items()})


# --- sampling --------------------------------------------------------------------------------------

# config.sampling key -> sampler argument, per method (SAMPLERS' signatures hold the defaults).
_SAMPLER_KEYS = {
    "pc": {"predictor": "predictor", "corrector": "corrector", "snr": "snr",
           "n_steps": "n_steps_each", "probability_flow": "probability_flow"},
    "ode": {"rtol": "rtol", "atol": "atol", "solver": "ode_solver"},
    "ddim": {"num_steps": "num_steps", "eta": "eta", "grid": "grid"},
    "dpm_solver_pp": {"num_steps": "num_steps", "grid": "grid",
                      "lower_order_final": "lower_order_final"},
    "dpm_solver_pp_3m": {"num_steps": "num_steps", "grid": "grid",
                         "lower_order_final": "lower_order_final"},
    "dpm_solver_pp_2s": {"num_steps": "num_steps", "grid": "grid", "r": "r"},
    "unipc": {"num_steps": "num_steps", "grid": "grid", "order": "order",
              "lower_order_final": "lower_order_final", "variant": "unipc_variant"},
    "heun": {"num_steps": "num_steps", "grid": "grid", "rho": "rho"},
    "edm": {"num_steps": "num_steps", "grid": "grid", "rho": "rho", "S_churn": "S_churn",
            "S_min": "S_min", "S_max": "S_max", "S_noise": "S_noise"},
    "adaptive_sde": {"rtol": "rtol", "atol": "atol", "h_init": "h_init", "safety": "safety",
                     "exponent": "exponent", "max_nfe": "max_nfe"},
}


def sampler_options(config: Any, method: str | None = None) -> tuple[str, dict]:
    """``(method, options)`` of ``config.sampling``: the method (``method`` if given, else
    ``config.sampling.method``, a key of ``samplers.SAMPLERS``, default 'pc') and the keyword
    options the config sets for it, ``noise_removal`` as ``denoise``."""
    s = _section(config, "sampling")
    where = "sampling method" if method is not None else "config.sampling.method"
    method = str(method if method is not None else s.get("method", "pc")).lower()
    if method not in samplers.SAMPLERS:
        raise ValueError(f"Unknown {where}={method!r}; use one of {sorted(samplers.SAMPLERS)}.")
    options = _given(s, {"denoise": "noise_removal", **_SAMPLER_KEYS.get(method, {})})
    tables = {"predictor": samplers.PREDICTORS, "corrector": samplers.CORRECTORS,
              "solver": samplers.ODE_SOLVERS}
    for arg, table in tables.items():
        value = options.get(arg)
        if isinstance(value, str) and value.lower() not in table:
            key = _SAMPLER_KEYS[method][arg]
            raise ValueError(f"Unknown config.sampling.{key}={value!r}; use one of {sorted(table)}.")
    return method, options


def get_sampling_fn(config: Any, sde: sde_lib.SDE, shape: Sequence[int], eps: float, *,
                    method: str | None = None, nfe: int | None = None
                    ) -> Callable[..., samplers.SampleResult]:
    """``sample(rng, score_fn, x_init=None) -> SampleResult`` with the sampler of
    ``config.sampling`` (official ``sampling.get_sampling_fn``); ``eps`` is the sampling epsilon of
    :func:`get_sde`. ``score_fn`` may be a ``jax.tree_util.Partial`` carrying parameters.
    ``method`` / ``nfe`` (else ``config.sampling.nfe``) override the config's method and budget
    (:func:`scoresde_jax.samplers.sample`; a budget replaces the config's step count)."""
    method, options = sampler_options(config, method)
    nfe = nfe if nfe is not None else _section(config, "sampling").get("nfe")
    if nfe is not None:
        options = {k: v for k, v in options.items() if k not in ("num_steps", "max_nfe")}
    shape = tuple(int(s) for s in shape)

    def sample(rng: jax.Array, score_fn, x_init: jax.Array | None = None):
        return samplers.sample(score_fn, sde, shape, rng, method=method, nfe=nfe, eps=eps,
                               x_init=x_init, **options)

    return sample


def snapshot_sample_fn(config: Any, s: Setup) -> Callable[[Any, jax.Array], Any] | None:
    """The sample function of training snapshots (``training.snapshot_sampling``, with
    ``training.snapshot_num_samples`` samples, 64 by default), or None."""
    t = _section(config, "training")
    if not bool(t.get("snapshot_sampling", False)):
        return None
    return make_sample_fn(config, s, num_samples=int(t.get("snapshot_num_samples", 64)))


def make_sample_fn(config: Any, s: Setup, *, num_samples: int, method: str | None = None,
                   nfe: int | None = None, classes: Sequence[int] | None = None,
                   guidance: float = 0.0) -> Callable[[Any, jax.Array], Any]:
    """Jitted ``(params, rng) -> samples`` in data space (images clipped to ``[0, 1]``, vector data
    as they are) with the sampler of ``config.sampling`` (``method`` / ``nfe`` as in
    :func:`get_sampling_fn`). Compiles once. For a class-conditional model, ``classes`` (cycled
    over the samples, :func:`sample_classes`) with classifier-free guidance ``guidance``; without
    ``classes`` it samples the null class (unconditional)."""
    shape = (int(num_samples),) + tuple(s.input_shape[1:])
    y = None if classes is None else jnp.asarray(sample_classes(classes, num_samples))
    if y is not None:
        guidance_lib.null_label(s.model)  # a conditional model, else a ValueError now
    sampling_fn = get_sampling_fn(config, s.sde, shape, s.sampling_eps, method=method, nfe=nfe)
    inverse = get_data_inverse_scaler(config)
    clip = not is_vector_data(config)

    def sample(params, rng):
        score = guidance_lib.model_score_fn(s.sde, s.model, params, continuous=s.continuous,
                                            labels=y, guidance=guidance)
        x = inverse(sampling_fn(rng, score).x)
        return jnp.clip(x, 0.0, 1.0) if clip else x

    return jax.jit(sample, out_shardings=distributed.replicated(s.mesh))


def sample_classes(classes: Sequence[int], num_samples: int) -> np.ndarray:
    """The class of each of ``num_samples`` samples: ``classes`` cycled."""
    classes = np.asarray(classes, np.int32).reshape(-1)
    if classes.size == 0:
        raise ValueError("classes must name at least one class.")
    return np.resize(classes, int(num_samples))


def conditional_eval_options(config: Any) -> tuple[tuple[int, ...], float] | None:
    """``(classes, guidance)`` of ``config.eval`` for a class-conditional model
    (``model.num_classes > 0``; all classes and no guidance by default), else None."""
    k = int(_section(config, "model").get("num_classes", 0))
    if k <= 0 or str(_section(config, "model").get("name", "")) == "classifier":
        return None
    e = config.get("eval") or {}
    return tuple(int(c) for c in e.get("classes", range(k))), float(e.get("guidance", 0.0))


def class_accuracy(config: Any, samples: np.ndarray, classes: np.ndarray) -> float:
    """Accuracy of the embedded digits classifier on samples generated for ``classes`` (DIGITS
    only; chance is 0.1)."""
    if str(_section(config, "data").get("dataset", "")).upper() != "DIGITS":
        raise ValueError("class_accuracy needs a classifier of the dataset: only DIGITS has one.")
    _, logits = evaluation.digits_feature_extractor()(samples)
    return float(np.mean(np.argmax(logits, -1) == np.asarray(classes)))


# --- evaluation ------------------------------------------------------------------------------------


def get_likelihood_fn(config: Any, s: Setup, *, bits: bool = True) -> Callable:
    """``likelihood_fn(params, x, rng) -> BPDResult`` of the setup's model on scaled data, with the
    bits/dim offset of ``config.data.centered`` (none for vector data) and
    ``config.data.uniform_dequantization``; ``bits=False``: ``LikelihoodResult`` in nats."""
    d = _section(config, "data")
    vector = is_vector_data(config)
    return likelihood.get_likelihood_fn(
        s.sde, lambda p: get_score_fn(s.sde, get_model_fn(s.model, p), continuous=s.continuous),
        centered=bool(d.centered), bits=bits, offset=0.0 if vector else None,
        dequantize=not vector and bool(d.get("uniform_dequantization", False)))


def likelihood_data(config: Any) -> tuple[bool, bool, float]:
    """``(vector, centered, offset)`` of the data: the 8-bit bits/dim offset
    (``likelihood.bpd_offset``) for images, 0 for continuous vector data."""
    vector, centered = is_vector_data(config), bool(_section(config, "data").centered)
    return vector, centered, 0.0 if vector else likelihood.bpd_offset(centered)


# config.eval key -> argument of the eval / stats / likelihood jobs (their signatures: defaults).
_EVAL_KEYS = {"batch_size": "batch_size", "inception_path": "inception_path",
              "stats_path": "stats_path", "preprocess": "inception_preprocess",
              "dequantize": "dequantize", "repeats": "likelihood_repeats"}


def eval_options(config: Any) -> dict:
    """The ``config.eval`` options the config sets, as job arguments: ``batch_size``,
    ``inception_path``, ``stats_path``, ``preprocess`` (``eval.inception_preprocess``),
    ``dequantize``, ``repeats`` (``eval.likelihood_repeats``)."""
    return _given(config.get("eval"), _EVAL_KEYS)


def dataset_name(config: Any) -> str:
    """``config.data.dataset``."""
    return str(_section(config, "data").dataset)


def get_quality_fn(config: Any) -> Callable[[np.ndarray], dict]:
    """The sample-quality metric of the embedded datasets, ``samples -> {name: float}``: the
    digits classifier's FID/IS/KID for DIGITS (resized as ``data.digits_resize``), sliced
    Wasserstein distances to exact samples for the ``TOY_*`` mixtures, ``{}`` for the others."""
    d = _section(config, "data")
    name, seed = str(d.dataset), run_seed(config)
    if is_vector_data(config):
        return lambda samples: evaluation.toy_metrics(name, samples, seed=seed)
    if name.upper() != "DIGITS":
        return lambda samples: {}
    method = str(d.get("digits_resize", "bilinear"))
    return lambda samples: {k: float(v) for k, v in
                            evaluation.digits_metrics(samples, method=method).items()}


def eval_num_samples(config: Any, num_samples: int | None = None) -> int:
    """``num_samples`` if given, else ``config.eval.num_samples`` (64 when the config has none)."""
    if num_samples is not None:
        return int(num_samples)
    e = config.get("eval") or {}
    return int(e.get("num_samples", 64))
