"""Guidance for class-conditional sampling: pure functions over score functions.

A *label score function* ``score_fn(x, t, y) -> score`` is the score of a class-conditional network
(``y`` of shape ``(B,)``; the index ``null = num_classes`` is the unconditional "null class" of a
network trained with label dropout). Everything here returns a plain score function
``score(x, t)`` as a :class:`jax.tree_util.Partial` whose labels, scales and parameters are data,
so every sampler of :mod:`scoresde_jax.samplers` (PC, ODE, DDIM, DPM-Solver++, Heun), the
controllable samplers and the likelihood take it and compile once for all labels and scales.

* Conditional score at fixed labels (:func:`label_score`): ``score(x, t) = score_fn(x, t, y)``.
* Classifier-free guidance (Ho & Salimans 2022), :func:`classifier_free_guidance`:

      score_w(x, t) = (1 + w) score_fn(x, t, y) - w score_fn(x, t, null).

  ``w = 0`` is the conditional score; with exact scores ``score_w = grad log p_t(x) + (1 + w)
  grad log p_t(y | x)``, i.e. classifier guidance at scale ``1 + w``.
* Classifier guidance (Song et al. 2021, appendix I; Dhariwal & Nichol 2021),
  :func:`classifier_guidance`: ``score(x, t) + scale * grad_x log p_t(y | x)`` with a
  noise-conditional classifier ``classifier_fn(x, t) -> logits``; ``scale = 1`` is Bayes' rule.

:func:`model_label_score_fn` and :func:`model_classifier_fn` turn flax networks with parameters
into these functions (the labels of :mod:`scoresde_jax.parameterization`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from scoresde_jax.controllable import conditional_score_fn
from scoresde_jax.likelihood import LikelihoodResult, log_likelihood
from scoresde_jax.parameterization import get_model_fn, get_parameterization, get_score_fn
from scoresde_jax.samplers.common import as_score_pytree
from scoresde_jax.sde import SDE

__all__ = [
    "label_score",
    "classifier_free_guidance",
    "classifier_guidance",
    "model_label_score_fn",
    "model_classifier_fn",
    "guided_score_fn",
    "null_label",
    "model_score_fn",
    "conditional_log_likelihood",
]

LabelScoreFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
ClassifierFn = Callable[[jax.Array, jax.Array], jax.Array]


def null_label(model: Any) -> int:
    """The null-class index of a conditional network: ``model.num_classes``."""
    k = int(getattr(model, "num_classes", 0) or 0)
    if k <= 0:
        raise ValueError(f"{type(model).__name__} is unconditional (num_classes=0); set "
                         "config.model.num_classes > 0 to train a class-conditional model.")
    return k


def _labels(y: Any) -> jax.Array:
    if y is None:
        raise ValueError("class labels y are required (an int or a (B,) integer array).")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(f"class labels y must be integers, got dtype {y.dtype}.")
    if y.ndim > 1:
        raise ValueError(f"class labels y must be a scalar or a (B,) vector, got shape {y.shape}.")
    return y.astype(jnp.int32)


def _batch_labels(y: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.broadcast_to(y, (x.shape[0],))


def _label_score(score_fn, y, x, t):
    return score_fn(x, t, _batch_labels(y, x))


def label_score(score_fn: LabelScoreFn, y: Any) -> Partial:
    """``score(x, t) = score_fn(x, t, y)``: the class-conditional score at labels ``y`` (an int or
    ``(B,)``)."""
    return Partial(_label_score, as_score_pytree(score_fn, signature="(x, t, y) -> score"),
                   _labels(y))


def _cfg(score_fn, y, null, w, x, t):
    w = jnp.asarray(w, x.dtype)
    y, n = _batch_labels(y, x), _batch_labels(null, x)
    both = score_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([y, n]))
    cond, uncond = both[: x.shape[0]], both[x.shape[0]:]
    return (1.0 + w) * cond - w * uncond


def classifier_free_guidance(score_fn: LabelScoreFn, y: Any, w: float, *, null: int) -> Partial:
    """Classifier-free guidance ``(1 + w) score_fn(x, t, y) - w score_fn(x, t, null)``.

    ``score_fn(x, t, y)`` is a label score function (one batched call evaluates the conditional
    and the null score together); ``y`` an int or ``(B,)`` labels; ``null`` the null-class index
    (:func:`null_label`). ``y`` and ``w`` are data of the returned ``Partial``.
    """
    return Partial(_cfg, as_score_pytree(score_fn, signature="(x, t, y) -> score"), _labels(y),
                   jnp.asarray(int(null), jnp.int32), jnp.asarray(w))


def classifier_guidance(score_fn: Callable, classifier_fn: ClassifierFn, y: Any,
                        scale: float = 1.0) -> Partial:
    """Classifier guidance ``score_fn(x, t) + scale * grad_x log softmax(classifier_fn(x, t))[y]``
    (:func:`scoresde_jax.controllable.conditional_score_fn`); ``score_fn`` may itself be a
    guided or label score at fixed labels."""
    return conditional_score_fn(score_fn, classifier_fn, _labels(y), scale)


@dataclasses.dataclass(frozen=True)
class _ModelScore:
    """``(params, x, t, y) -> score`` of a conditional network (hashable: the jit cache key)."""

    sde: SDE
    model: Any
    continuous: bool

    def __call__(self, params, x, t, y):
        param = get_parameterization(self.sde, self.continuous)
        t = jnp.asarray(t, x.dtype)
        out = self.model.apply({"params": params}, x, param.labels(self.sde, t), train=False,
                               class_labels=y)
        return param.output_to_score(self.sde, out, t)


def model_label_score_fn(sde: SDE, model: Any, params: Any, *, continuous: bool = True
                         ) -> Partial:
    """The label score function ``(x, t, y) -> score`` of a class-conditional flax network with
    ``params`` (the parameterization of ``(sde.kind, continuous)``)."""
    null_label(model)
    return Partial(_ModelScore(sde, model, bool(continuous)), params)


@dataclasses.dataclass(frozen=True)
class _ModelClassifier:
    """``(params, x, t) -> logits`` of a noise-conditional classifier (continuous-time labels)."""

    sde: SDE
    model: Any

    def __call__(self, params, x, t):
        labels = get_parameterization(self.sde, True).labels(self.sde, jnp.asarray(t, x.dtype))
        return self.model.apply({"params": params}, x, labels, train=False)


def model_classifier_fn(sde: SDE, classifier: Any, params: Any) -> Partial:
    """``classifier_fn(x, t) -> logits`` of a :class:`~scoresde_jax.models.NoiseConditionalClassifier`
    trained with :func:`scoresde_jax.losses.get_classifier_loss_fn` on ``sde``."""
    return Partial(_ModelClassifier(sde, classifier), params)


def guided_score_fn(score_fn: Callable, y: Any, *, guidance: float = 0.0, null: int | None = None,
                    classifier_fn: ClassifierFn | None = None) -> Partial:
    """One front door: with ``classifier_fn`` the classifier guidance of the (unconditional or
    fixed-label) ``score_fn(x, t)`` at ``scale = guidance``; otherwise the classifier-free
    guidance of the label score function ``score_fn(x, t, y)`` with ``w = guidance`` and the
    null class ``null``."""
    if classifier_fn is not None:
        return classifier_guidance(score_fn, classifier_fn, y, guidance)
    if null is None:
        raise ValueError("classifier-free guidance needs the null-class index `null` "
                         "(guidance.null_label(model)); or give classifier_fn.")
    return classifier_free_guidance(score_fn, y, guidance, null=null)


def model_score_fn(sde: SDE, model: Any, params: Any, *, continuous: bool = True,
                   labels: Any = None, guidance: Any = 0.0, classifier: Any = None,
                   classifier_params: Any = None, classifier_sde: SDE | None = None,
                   classifier_scale: Any = 1.0) -> Callable:
    """The sampling score ``score(x, t)`` of a flax score network with ``params``:

    * ``labels is None``: the unconditional score (the null class of a conditional network);
    * ``labels`` and no ``classifier``: classifier-free guidance at ``w = guidance`` of the
      conditional network (``w = 0``: the conditional score);
    * a ``classifier`` (a noise-conditional classifier with ``classifier_params``, trained on
      ``classifier_sde``, default ``sde``): the unconditional score plus ``classifier_scale *
      grad_x log p_t(labels | x)``.

    Labels, scales and parameters are data (traced under ``jax.jit``), so one compiled sampler
    serves all of them."""
    if labels is None or classifier is not None:
        base = get_score_fn(sde, get_model_fn(model, params), continuous=continuous)
        if classifier is None:
            return base
        if labels is None:
            raise ValueError("classifier guidance needs class labels (classes).")
        clf = model_classifier_fn(classifier_sde or sde, classifier, classifier_params)
        return classifier_guidance(base, clf, labels, classifier_scale)
    score = model_label_score_fn(sde, model, params, continuous=continuous)
    return classifier_free_guidance(score, labels, guidance, null=null_label(model))


def conditional_log_likelihood(score_fn: LabelScoreFn, x: jax.Array, y: Any, *, sde: SDE,
                               rng: jax.Array | None = None, **options: Any) -> LikelihoodResult:
    """Per-example ``log p(x_i | y_i)`` in nats of a label score function ``score_fn(x, t, y)``:
    :func:`scoresde_jax.likelihood.log_likelihood` of the label score at ``y_i`` (the
    probability-flow ODE of the class), one label per example (``y`` an int or ``(B,)``; the null
    class gives the unconditional likelihood). ``options``: those of ``log_likelihood``; the
    Hutchinson probe of example ``i`` comes from ``fold_in(rng, i)``."""
    y = jnp.broadcast_to(_labels(y), (x.shape[0],))
    keys = None if rng is None else jax.vmap(lambda i: jax.random.fold_in(rng, i))(
        jnp.arange(x.shape[0]))
    fn = as_score_pytree(score_fn, signature="(x, t, y) -> score")

    def one(xi, yi, ki):
        res = log_likelihood(label_score(fn, yi), xi[None], sde=sde, rng=ki, **options)
        return jax.tree.map(lambda a: a[0], res)

    return jax.vmap(one, in_axes=(0, 0, None if keys is None else 0))(x, y, keys)
