"""Config -> what a job runs on, built once: the :class:`Setup` (SDE, network, optimizer, mesh,
data) and each job's typed options (:func:`train_options`, :func:`sample_options`,
:func:`eval_options`, :func:`likelihood_options`, :func:`stats_options`).

Options given explicitly (a command-line flag, a keyword here) win over the config's
``sampling`` / ``eval`` keys, which win over the job's own defaults. Nothing below this module
reads a config.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import optax

from scoresde_jax import samplers
from scoresde_jax import sde as sde_lib
from scoresde_jax.config.components import (
    given_keys,
    required_key,
    section_of,
    create_model,
    data_spec,
    get_sde,
    run_seed,
)
from scoresde_jax.config_files import config_for_workdir, to_record
from scoresde_jax.config.run import get_optimizer, sampler_options, sampler_spec
from scoresde_jax.data.spec import DataSpec
from scoresde_jax.jobs.convert import ConvertOptions
from scoresde_jax.jobs.eval import EvalOptions
from scoresde_jax.jobs.generate import Conditioning, SamplerSpec
from scoresde_jax.jobs.likelihood import LikelihoodOptions
from scoresde_jax.jobs.sample import SampleOptions
from scoresde_jax.jobs.stats import StatsOptions
from scoresde_jax.jobs.train import TrainOptions
from scoresde_jax.models import NoiseConditionalClassifier
from scoresde_jax.training import distributed
from scoresde_jax.training.loop import LoopOptions
from scoresde_jax.training.state import TrainState, abstract_state, init_state


class Setup(NamedTuple):
    """What a config turns into, shared by every job."""

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
    data: DataSpec
    record: Mapping[str, Any] = {}  # the resolved config of what makes samples (provenance)

    def init_state(self, *, on_lowered: Callable[[], None] | None = None) -> TrainState:
        """The step-0 train state, replicated over the mesh (same on every host); ``on_lowered``
        as in :func:`scoresde_jax.training.state.init_state`."""
        return init_state(jax.random.PRNGKey(self.seed), self.model, self.tx,
                          example_shape=self.input_shape[1:], ema_rate=self.ema_rate,
                          mesh=self.mesh, on_lowered=on_lowered)

    def abstract_state(self) -> TrainState:
        """Shapes, dtypes and shardings of the train state (for restoring)."""
        return abstract_state(self.model, self.tx, example_shape=self.input_shape[1:],
                              ema_rate=self.ema_rate, mesh=self.mesh)


def setup(config: Any, *, model: Any = None, mesh: jax.sharding.Mesh | None = None) -> Setup:
    """SDE, model, optimizer, mesh and data of a config, after checking it for the usual mistakes
    (batch sizes against the devices, frequencies against ``n_jitted_steps``, sampler names).
    ``model`` replaces ``create_model(config)`` (tests, custom networks)."""
    sde, eps = get_sde(config)
    model = model if model is not None else create_model(config)
    mesh = mesh or distributed.make_mesh()
    t = section_of(config, "training")
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
    m = section_of(config, "model")
    data = data_spec(config)
    return Setup(sde, eps, model, get_optimizer(config), mesh, (batch_size,) + data.example_shape,
                 float(required_key(m, "ema_rate", "model", "setup")), run_seed(config),
                 bool(t.get("continuous", True)), accum, data, provenance(config))


def provenance(config: Any) -> dict:
    """The parts of a resolved config that decide what a trained network's samples, likelihoods
    and metrics are: the network and its noise scales (``model``), the SDE
    (``training.sde`` / ``continuous``), the data, the sampler and the evaluation settings."""
    full = to_record(config)
    out = {k: full[k] for k in ("model", "data", "sampling", "eval") if k in full}
    t = full.get("training") or {}
    out["training"] = {k: t[k] for k in ("sde", "continuous") if k in t}
    return out


_LOOP_KEYS = tuple(f.name for f in dataclasses.fields(LoopOptions))


def loop_options(config: Any) -> LoopOptions:
    """The training loop's cadence from ``config.training`` (checked by ``LoopOptions``)."""
    t = section_of(config, "training")
    return LoopOptions(**{k: int(v) for k, v in given_keys(t, _LOOP_KEYS).items()})


def is_classifier(model: Any) -> bool:
    """True for the noise-conditional classifier (trained by the classifier objective)."""
    return isinstance(model, NoiseConditionalClassifier)


def parse_classes(text: str | Sequence[int] | int | None) -> tuple[int, ...] | None:
    """``'3'`` / ``'0,1,2'`` / ``[0, 1]`` / ``3`` -> a tuple of class indices (None stays None)."""
    if text is None:
        return None
    if isinstance(text, int):
        return (int(text),)
    if isinstance(text, str):
        try:
            return tuple(int(c) for c in text.replace(" ", "").split(",") if c)
        except ValueError:
            raise ValueError(f"--class {text!r}: give class indices, e.g. --class 3 or "
                             "--class 0,1,2.") from None
    return tuple(int(c) for c in text)


def _check_range(classes: Sequence[int], n: int, whose: str) -> None:
    if not classes:
        raise ValueError("classes must name at least one class.")
    bad = [c for c in classes if not 0 <= c < n]
    if bad:
        raise ValueError(f"classes {bad} are outside {whose} range 0..{n - 1}.")


def conditioning(config: Any, s: Setup, *, classes: Any = None, guidance: float | None = None,
                 classifier: str | None = None, classifier_scale: float | None = None
                 ) -> Conditioning:
    """The checked conditioning of a job on the model of ``s``.

    A class-conditional model (``model.num_classes = K > 0``) samples ``classes`` (default
    ``config.eval.classes``, all ``K``; ``K`` itself is the null class) at ``guidance`` (default
    ``config.eval.guidance``). ``classifier`` (the workdir of a trained noise-conditional
    classifier) guides the unconditional score (a conditional model's null class) at
    ``classifier_scale`` (default 1, Bayes' rule); it needs ``classes`` for an unconditional
    model and excludes classifier-free ``guidance``."""
    classes = parse_classes(classes)
    k = int(getattr(s.model, "num_classes", 0) or 0)
    e = config.get("eval") or {}
    default_classes = tuple(int(c) for c in e.get("classes", range(k))) if k > 0 else None
    if classifier is not None:
        if guidance:
            raise ValueError("give either classifier-free guidance (--guidance) or a classifier "
                             "(--classifier), not both.")
        classes = classes if classes is not None else default_classes
        if classes is None:
            raise ValueError("classifier guidance needs --class (the classes to sample).")
        cs = setup(config_for_workdir(None, classifier), mesh=s.mesh)
        if not is_classifier(cs.model):
            raise ValueError(f"{classifier} does not hold a classifier (model.name='classifier', "
                             "e.g. configs/digits_classifier.py).")
        if tuple(cs.input_shape[1:]) != tuple(s.input_shape[1:]):
            raise ValueError(f"the classifier of {classifier} takes {cs.input_shape[1:]}, the "
                             f"score model samples {s.input_shape[1:]}.")
        _check_range(classes, cs.model.num_classes, "the classifier's")
        scale = 1.0 if classifier_scale is None else float(classifier_scale)
        if not math.isfinite(scale):
            raise ValueError(f"--classifier_scale {scale} must be a finite number.")
        return Conditioning(classes, 0.0, cs, classifier, scale)
    if classifier_scale is not None:
        raise ValueError("--classifier_scale needs --classifier (a classifier's workdir).")
    if k <= 0:
        if classes is not None or guidance:
            raise ValueError("the model is unconditional (model.num_classes=0): --class and "
                             "--guidance need a class-conditional model, or pass --classifier.")
        return Conditioning()
    classes = classes if classes is not None else default_classes
    _check_range(classes, k + 1, "the model's (K = the null class)")
    w = float(e.get("guidance", 0.0)) if guidance is None else float(guidance)
    if not math.isfinite(w):
        raise ValueError(f"--guidance {w} must be a finite number (0: no guidance).")
    return Conditioning(classes, w, None, None, 0.0)


def _eval_section(config: Any) -> Any:
    return config.get("eval") or {}


def _at_least(value: Any, low: int, flag: str) -> int | None:
    """``value`` as an int >= ``low`` (None stays None), else a one-line error naming ``flag``."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{flag} {value!r} must be an integer >= {low}.")
    return int(value)


def parse_seeds(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """EDM's ``--seeds``: ``'0-63'``, ``'0,5,7-9'`` or a sequence -> a tuple of seeds."""
    if text is None:
        return None
    if not isinstance(text, str):
        return tuple(int(v) for v in text)
    out: list[int] = []
    try:
        for part in text.replace(" ", "").split(","):
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-"))
                if hi < lo:
                    raise ValueError
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give seeds like 0-63 or 0,5,7-9.") from None
    if not out or min(out) < 0 or max(out) >= 2**32:
        raise ValueError(f"--seeds {text!r} must name seeds in 0 .. 2**32 - 1.")
    return tuple(out)


def checked_sampler(config: Any, s: Setup, method: str | None = None,
                    nfe: int | None = None) -> SamplerSpec:
    """:func:`sampler_spec` after a dry run of its budget on ``s.sde`` (an nfe too small for the
    method, or a budget for the adaptive ODE, fails here, before any work)."""
    spec = sampler_spec(config, method, nfe)
    if spec.nfe is not None:
        samplers.options_for_nfe(spec.method, spec.nfe, s.sde,
                                 denoise=spec.options.get("denoise", True),
                                 **{k: v for k, v in spec.options.items() if k != "denoise"})
    return spec


def sample_options(config: Any, s: Setup, *, method: str | None = None, nfe: int | None = None,
                   classes: Any = None, guidance: float | None = None,
                   classifier: str | None = None, classifier_scale: float | None = None,
                   **options: Any) -> SampleOptions:
    """:class:`~scoresde_jax.jobs.sample.SampleOptions`: the sampler of ``config.sampling`` (or
    ``method`` / ``nfe``), the conditioning (:func:`conditioning`) and the other fields as
    given."""
    seeds = parse_seeds(options.pop("seeds", None))
    if seeds is not None:
        options["num_samples"] = len(seeds)
    _at_least(options.get("num_samples"), 1, "--num_samples")
    _at_least(options.get("batch_size"), 1, "--batch_size")
    return SampleOptions(
        sampler=checked_sampler(config, s, method, nfe), seeds=seeds,
        cond=conditioning(config, s, classes=classes, guidance=guidance, classifier=classifier,
                          classifier_scale=classifier_scale),
        **{k: v for k, v in options.items() if v is not None})


def eval_options(config: Any, s: Setup, *, method: str | None = None, nfe: int | None = None,
                 classes: Any = None, guidance: float | None = None,
                 classifier: str | None = None, classifier_scale: float | None = None,
                 num_samples: int | None = None, batch_size: int | None = None,
                 inception_path: str | None = None, stats_path: str | None = None,
                 preprocess: str | None = None, **options: Any) -> EvalOptions:
    """:class:`~scoresde_jax.jobs.eval.EvalOptions`; unset fields come from ``config.eval``
    (``num_samples`` (64), ``batch_size`` (all samples in one round), ``inception_path``,
    ``stats_path``, ``inception_preprocess``)."""
    e = _eval_section(config)
    n = _at_least(num_samples if num_samples is not None else e.get("num_samples", 64), 2,
                  "--num_samples (config.eval.num_samples)")
    given = dict(inception_path=inception_path or e.get("inception_path"),
                 stats_path=stats_path or e.get("stats_path"),
                 preprocess=preprocess or e.get("inception_preprocess"))
    return EvalOptions(
        sampler=checked_sampler(config, s, method, nfe), num_samples=n,
        batch_size=_at_least(batch_size or e.get("batch_size", n), 1,
                             "--batch_size (config.eval.batch_size)"),
        cond=conditioning(config, s, classes=classes, guidance=guidance, classifier=classifier,
                          classifier_scale=classifier_scale),
        **{k: v for k, v in {**given, **options}.items() if v is not None})


def likelihood_options(config: Any, s: Setup, *, batch_size: int | None = None,
                       num_examples: int | None = None, num_batches: int | None = None,
                       repeats: int | None = None, dequantize: bool | None = None,
                       **options: Any) -> LikelihoodOptions:
    """:class:`~scoresde_jax.jobs.likelihood.LikelihoodOptions`; unset fields come from
    ``config.eval`` (``batch_size``, ``likelihood_repeats``, ``dequantize``; vector data:
    ``num_samples`` examples)."""
    e = _eval_section(config)
    bs = _at_least(batch_size or e.get("batch_size", 64), 1,
                   "--batch_size (config.eval.batch_size)")
    _at_least(num_examples, 1, "--num_examples")
    _at_least(num_batches, 1, "--num_batches")
    _at_least(repeats, 1, "--repeats")
    if num_batches is not None:
        if num_examples is not None:
            raise ValueError("give --num_examples or --num_batches, not both.")
        num_examples = int(num_batches) * bs
    if num_examples is None and s.data.vector:
        num_examples = int(e.get("num_samples", 64))
    return LikelihoodOptions(
        batch_size=bs, num_examples=num_examples,
        repeats=int(repeats or e.get("likelihood_repeats", 1)),
        dequantize=bool(e.get("dequantize", True) if dequantize is None else dequantize),
        **{k: v for k, v in options.items() if v is not None})


def stats_options(config: Any, data: DataSpec, *, out: str, batch_size: int | None = None,
                  inception_path: str | None = None, preprocess: str | None = None,
                  **options: Any) -> StatsOptions:
    """:class:`~scoresde_jax.jobs.stats.StatsOptions`; unset fields come from ``config.eval``
    (``batch_size`` (500), ``inception_path``, ``inception_preprocess``)."""
    e = _eval_section(config)
    given = dict(inception_path=inception_path or e.get("inception_path"),
                 preprocess=preprocess or e.get("inception_preprocess"))
    return StatsOptions(out=out, batch_size=int(batch_size or e.get("batch_size", 500)),
                        **{k: v for k, v in {**given, **options}.items() if v is not None})


def train_options(config: Any, s: Setup, *, evaluate: bool = True,
                  num_samples: int | None = None, **options: Any) -> TrainOptions:
    """:class:`~scoresde_jax.jobs.train.TrainOptions` of ``config.training``: the loop's cadence,
    the objective, snapshot sampling (``training.snapshot_sampling``,
    ``snapshot_num_samples``), the resolved config as the run's record, and (``evaluate``, not
    for a classifier) the final report of :func:`eval_options` with ``num_samples`` and seed
    ``config.seed + 1``."""
    t = section_of(config, "training")
    classifier = is_classifier(s.model)
    keys = ("eps",) if classifier else ("continuous", "likelihood_weighting", "reduce_mean", "eps",
                                        "loss", "P_mean", "P_std")
    snapshot = None
    if bool(t.get("snapshot_sampling", False)):
        snapshot = sampler_spec(config)
    report = None
    if evaluate and not classifier:
        report = eval_options(config, s, num_samples=num_samples, seed=s.seed + 1,
                              progress=options.get("progress"), data_dir=options.get("data_dir"))
    return TrainOptions(
        loop=loop_options(config), loss=given_keys(t, keys), classifier=classifier,
        snapshot=snapshot, snapshot_num_samples=int(t.get("snapshot_num_samples", 64)),
        record=to_record(config), evaluate=report,
        **{k: v for k, v in options.items() if v is not None})


def convert_options(config: Any, s: Setup, *, source: str | None = None,
                    checkpoint: str | None = None, source_format: str = "score_sde",
                    overwrite: bool = False, pretrained: Any = None, official: Any = None,
                    dataset: str | None = None) -> ConvertOptions:
    """:class:`~scoresde_jax.jobs.convert.ConvertOptions` with the weights read once: an official
    checkpoint (``official``, what ``scoresde_jax.pretrained.score_sde.load_checkpoint(source,
    s.abstract_state().params)`` returns: raw and EMA parameters and the step), or the weights of
    an ``edm`` / ``diffusers`` source (``pretrained``, a :class:`scoresde_jax.pretrained.Pretrained`
    whose ``config`` is ``config``); ``config`` is the workdir's record. ``dataset`` is used by
    the loader that built ``config``."""
    del dataset
    src = source if source is not None else checkpoint
    if src is None:
        raise ValueError("convert needs the pretrained model: SOURCE (or --checkpoint).")
    common = dict(source_format=source_format, overwrite=bool(overwrite), record=to_record(config))
    if source_format != "score_sde":
        if pretrained is None:
            raise ValueError(f"--from {source_format}: pass pretrained=scoresde_jax.pretrained."
                             "load(source) (its config is this config)")
        return ConvertOptions(source=str(src), params=pretrained.params, **common)
    if official is None:
        raise ValueError("--from score_sde: pass official=scoresde_jax.pretrained.score_sde."
                         "load_checkpoint(source, setup.abstract_state().params)")
    return ConvertOptions(source=str(official.path), params=official.weights(ema=False),
                          ema_params=official.weights(ema=True), step=int(official.step),
                          **common)


JOB_OPTIONS = {"train": train_options, "sample": sample_options, "eval": eval_options,
               "likelihood": likelihood_options, "stats": stats_options,
               "convert": convert_options}
"""``scoresde <job>`` -> the builder of its options, ``builder(config, setup, **given)``."""

JOB_SETUP = {"stats": data_spec}
"""What a job runs on when it is not the whole :func:`setup` (``stats`` reads data only)."""
