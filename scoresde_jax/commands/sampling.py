"""The round function of the ``sample`` and ``eval`` jobs: one jitted round of samples of a
workdir's EMA parameters, sharded over the mesh's ``'data'`` axis, unconditional or
class-conditional (classes cycled over the samples, classifier-free guidance ``w`` or classifier
guidance with a noise-conditional classifier of another workdir).

Round ``k`` of ``batch_size`` samples draws from ``fold_in(PRNGKey(seed), k)`` (the caller's key)
and generates sample ``i = k * batch_size + j`` for the class ``classes[i % len(classes)]``, so the
samples do not depend on how many devices share a round, and a resumed run gives what an unbroken
one gives.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from scoresde_jax import config as config_lib
from scoresde_jax import guidance as guidance_lib
from scoresde_jax.config.run import is_classifier
from scoresde_jax.training import distributed, restore_params

log = logging.getLogger("scoresde_jax.commands")


class Conditioning(NamedTuple):
    """What a round samples: ``classes`` (None: unconditional) at classifier-free guidance
    ``guidance``, or with a ``classifier`` (its setup and EMA parameters) at ``classifier_scale``."""

    classes: tuple[int, ...] | None = None
    guidance: float = 0.0
    classifier: Any = None  # config.Setup of the classifier's workdir
    classifier_params: Any = None
    classifier_scale: float = 0.0
    classifier_workdir: str | None = None

    def meta(self) -> dict:
        """JSON-able record (summary.json, results.json, rounds.json)."""
        if self.classes is None:
            return {}
        out = {"classes": list(self.classes), "guidance": self.guidance}
        if self.classifier is not None:
            out.update(guidance=None, classifier=self.classifier_workdir,
                       classifier_scale=self.classifier_scale)
        return out

    def tag(self) -> str:
        """A short folder-name suffix naming the classes and guidance ('' if unconditional)."""
        if self.classes is None:
            return ""
        cls = "-".join(map(str, self.classes))
        if len(cls) > 24:
            cls = hashlib.sha1(cls.encode()).hexdigest()[:8]
        if self.classifier is not None:
            return f"_cls_{cls}_clf_{self.classifier_scale:g}"
        return f"_cls_{cls}_w_{self.guidance:g}"


def parse_classes(text: str | Sequence[int] | int | None) -> tuple[int, ...] | None:
    """``'3'`` / ``'0,1,2'`` / ``[0, 1]`` / ``3`` -> a tuple of class indices (None stays None)."""
    if text is None:
        return None
    if isinstance(text, (int, np.integer)):
        return (int(text),)
    if isinstance(text, str):
        try:
            return tuple(int(c) for c in text.replace(" ", "").split(",") if c)
        except ValueError:
            raise ValueError(f"--class {text!r}: give class indices, e.g. --class 3 or "
                             "--class 0,1,2.") from None
    return tuple(int(c) for c in text)


def conditioning(config: Any, s: Any, *, classes: Any = None, guidance: float | None = None,
                 classifier: str | None = None, classifier_scale: float | None = None
                 ) -> Conditioning:
    """Check and resolve the conditioning of a job on the model of ``s``.

    A class-conditional model (``model.num_classes = K > 0``) samples ``classes`` (default
    ``config.eval.classes``, all ``K``; ``K`` itself is the null class) at ``guidance`` (default
    ``config.eval.guidance``). ``classifier`` (the workdir of a trained noise-conditional
    classifier, its ``config.json``) guides the unconditional score (a conditional model's null
    class) at ``classifier_scale`` (default 1, Bayes' rule); it needs ``classes`` for an
    unconditional model and excludes classifier-free ``guidance``."""
    classes = parse_classes(classes)
    defaults = config_lib.conditional_eval_options(config)
    k = int(getattr(s.model, "num_classes", 0) or 0)
    if classifier is not None:
        if guidance:
            raise ValueError("give either classifier-free guidance (--guidance) or a classifier "
                             "(--classifier), not both.")
        if classes is None:
            if defaults is None:
                raise ValueError("classifier guidance needs --class (the classes to sample).")
            classes = defaults[0]
        cc = config_lib.config_for_workdir(None, classifier)
        cs = config_lib.setup(cc, mesh=s.mesh)
        if not is_classifier(cs.model):
            raise ValueError(f"{classifier} does not hold a classifier (model.name='classifier', "
                             "e.g. configs/digits_classifier.py).")
        if tuple(cs.input_shape[1:]) != tuple(s.input_shape[1:]):
            raise ValueError(f"the classifier of {classifier} takes {cs.input_shape[1:]}, the "
                             f"score model samples {s.input_shape[1:]}.")
        _check_range(classes, cs.model.num_classes, "the classifier's")
        params, step = restore_params(classifier, cs.abstract_state())
        log.info("classifier guidance with %s (step %d)", classifier, step)
        scale = 1.0 if classifier_scale is None else float(classifier_scale)
        return Conditioning(classes, 0.0, cs, params, scale, classifier)
    if classifier_scale is not None:
        raise ValueError("--classifier_scale needs --classifier (a classifier's workdir).")
    if k <= 0:
        if classes is not None or guidance:
            raise ValueError("the model is unconditional (model.num_classes=0): --class and "
                             "--guidance need a class-conditional model, or pass --classifier.")
        return Conditioning()
    classes = classes if classes is not None else defaults[0]
    _check_range(classes, k + 1, "the model's (K = the null class)")
    return Conditioning(classes, float(defaults[1] if guidance is None else guidance))


def _check_range(classes: Sequence[int], n: int, whose: str) -> None:
    if not classes:
        raise ValueError("classes must name at least one class.")
    bad = [c for c in classes if not 0 <= c < n]
    if bad:
        raise ValueError(f"classes {bad} are outside {whose} range 0..{n - 1}.")


def round_labels(classes: Sequence[int], k: int, batch_size: int) -> np.ndarray:
    """The classes of round ``k``: sample ``i = k * batch_size + j`` gets ``classes[i % len]``."""
    c = np.asarray(classes, np.int32)
    return c[(k * batch_size + np.arange(batch_size)) % len(c)]


class RoundFn(NamedTuple):
    """``fn(params, rng, k) -> (samples, nfe)``: round ``k``'s samples (uint8 images, vectors as
    they are), replicated on every device; ``labels(k)`` its classes (None: unconditional)."""

    jitted: Any
    cond: Conditioning
    batch_size: int

    def labels(self, k: int) -> np.ndarray | None:
        if self.cond.classes is None:
            return None
        return round_labels(self.cond.classes, k, self.batch_size)

    def args(self, params: Any, rng: jax.Array, k: int = 0) -> tuple:
        """The arguments of ``jitted`` for round ``k`` (``jitted.trace(*args)`` times its
        compilation: benchmarks)."""
        c = self.cond
        y = self.labels(k)
        return (params, c.classifier_params, rng, None if y is None else jnp.asarray(y),
                jnp.asarray(c.guidance), jnp.asarray(c.classifier_scale))

    def __call__(self, params: Any, rng: jax.Array, k: int = 0):
        return self.jitted(*self.args(params, rng, k))


def round_fn(config: Any, s: Any, *, batch_size: int, method: str | None = None,
             nfe: int | None = None, cond: Conditioning | None = None) -> RoundFn:
    """The jitted round of ``batch_size`` samples with ``method`` / ``nfe``
    (:func:`scoresde_jax.config.get_sampling_fn`) under ``cond``; the prior draw and the labels
    are sharded over the mesh's ``'data'`` axis when ``batch_size`` splits over its devices.
    Labels and scales are data: one compilation serves every round, class and scale."""
    cond = cond or Conditioning()
    shape = (int(batch_size),) + tuple(s.input_shape[1:])
    sampling_fn = config_lib.get_sampling_fn(config, s.sde, shape, s.sampling_eps, method=method,
                                             nfe=nfe)
    inverse = config_lib.get_data_inverse_scaler(config)
    images = not config_lib.is_vector_data(config)
    shard = batch_size % s.mesh.devices.size == 0
    spec = NamedSharding(s.mesh, PartitionSpec("data"))
    clf = cond.classifier

    def one_round(params, clf_params, rng, y, w, scale):
        k_init, k_sample = jax.random.split(rng)
        x_init = s.sde.prior_sampling(k_init, shape)
        if shard:
            x_init = jax.lax.with_sharding_constraint(x_init, spec)
            if y is not None:
                y = jax.lax.with_sharding_constraint(y, spec)
        score = guidance_lib.model_score_fn(
            s.sde, s.model, params, continuous=s.continuous, labels=y, guidance=w,
            classifier=None if clf is None else clf.model, classifier_params=clf_params,
            classifier_sde=None if clf is None else clf.sde, classifier_scale=scale)
        res = sampling_fn(k_sample, score, x_init)
        x = inverse(res.x)
        if images:
            x = jnp.clip(x * 255.0, 0.0, 255.0).astype(jnp.uint8)
        return x, res.nfe

    jitted = jax.jit(one_round, out_shardings=distributed.replicated(s.mesh))
    return RoundFn(jitted, cond, int(batch_size))
