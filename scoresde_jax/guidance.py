"""Conditioning: class-conditional scores, classifier-free and classifier guidance, class-conditional
sampling and likelihood.  Pure functions over score functions.

A *label score function* ``score_fn(x, t, y) -> score`` is the score of a class-conditional network
(``y`` of shape ``(B,)``; the index ``null = num_classes`` is the unconditional "null class" of a
network trained with label dropout).  Everything here returns a plain score function ``score(x,
t)`` as a :class:`jax.tree_util.Partial` whose labels, scales and parameters are data, so every
sampler of :mod:`scoresde_jax.samplers` (PC, ODE, DDIM, DPM-Solver++, Heun), the controllable
samplers of :mod:`scoresde_jax.controllable` and the likelihood take it and compile once for all
labels and scales.

* Conditional score at fixed labels (:func:`label_score`): ``score(x, t) = score_fn(x, t, y)``.
* Classifier-free guidance (Ho & Salimans 2022), :func:`classifier_free_guidance`:

      score_w(x, t) = (1 + w) score_fn(x, t, y) - w score_fn(x, t, null).

  ``w = 0`` is the conditional score; with exact scores ``score_w = grad log p_t(x) + (1 + w)
  grad log p_t(y | x)``, i.e. classifier guidance at scale ``1 + w``.
* Classifier guidance (Song et al. 2021, appendix I.1; Dhariwal & Nichol 2021),
  :func:`classifier_guidance`.  By Bayes' rule ``grad_x log p_t(x | y) = grad_x log p_t(x) +
  grad_x log p_t(y | x)``, so a time-dependent classifier ``classifier_fn(x, t) -> logits``
  trained on noisy data (:func:`scoresde_jax.losses.get_classifier_loss_fn`) turns the
  unconditional score into a conditional one:

      score_y(x, t) = score(x, t) + scale * grad_x log softmax(classifier_fn(x, t))[y]

  (``scale = 1`` is Bayes' rule; ``scale > 1`` sharpens the class).  Any sampler then samples
  ``p_0(x | y)``; :func:`pc_conditional_sample` is the PC sampler (official
  ``get_pc_conditional_sampler``).
* Conditional likelihood :func:`conditional_log_likelihood`: the probability-flow ODE of the class.

:func:`model_label_score_fn`, :func:`model_classifier_fn` and :func:`model_score_fn` read flax
networks with parameters through the adapter of :mod:`scoresde_jax.parameterization`
(``get_score_fn(sde, get_model_fn(model, params))``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from scoresde_jax.likelihood import LikelihoodResult, log_likelihood
from scoresde_jax.parameterization import get_logits_fn, get_model_fn, get_score_fn
from scoresde_jax.samplers.common import SampleResult, as_score_pytree
from scoresde_jax.samplers.pc import pc_sample
from scoresde_jax.sde import SDE

__all__ = [
    "null_label",
    "label_score",
    "classifier_free_guidance",
    "classifier_logp_grad",
    "classifier_guidance",
    "pc_conditional_sample",
    "guided_score_fn",
    "model_label_score_fn",
    "model_classifier_fn",
    "model_score_fn",
    "conditional_log_likelihood",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
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
    """Class labels ``y`` (an int or a ``(B,)`` integer array) as int32, checked."""
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


# --- label scores and classifier-free guidance -----------------------------------------------------
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


def check_scale(value: Any, name: str) -> None:
    """A guidance scale must be finite (NaN / inf would make every sample NaN); traced values pass."""
    if isinstance(value, jax.core.Tracer):
        return
    v = np.asarray(value)
    if not np.isfinite(v).all():
        raise ValueError(f"{name}={value!r} must be a finite number (0: no guidance).")


def classifier_free_guidance(score_fn: LabelScoreFn, y: Any, w: float, *, null: int) -> Partial:
    """Classifier-free guidance ``(1 + w) score_fn(x, t, y) - w score_fn(x, t, null)``.

    ``score_fn(x, t, y)`` is a label score function (one batched call evaluates the conditional
    and the null score together); ``y`` an int or ``(B,)`` labels; ``null`` the null-class index
    (:func:`null_label`). ``y`` and ``w`` are data of the returned ``Partial``.
    """
    check_scale(w, "guidance scale w")
    return Partial(_cfg, as_score_pytree(score_fn, signature="(x, t, y) -> score"), _labels(y),
                   jnp.asarray(int(null), jnp.int32), jnp.asarray(w))


# --- classifier guidance ---------------------------------------------------------------------------
def classifier_logp_grad(classifier_fn: ClassifierFn, x: jax.Array, t: jax.Array,
                         y: jax.Array) -> jax.Array:
    """``grad_x log p_t(y | x)`` with ``log p_t(. | x) = log_softmax(classifier_fn(x, t))``; ``y``
    has shape ``(B,)`` (integer labels) and the classifier maps ``(B, *D), (B,) -> (B, K)`` logits,
    each example independently (so the gradient of the sum is the per-example gradient)."""
    y = jnp.broadcast_to(jnp.asarray(y), (x.shape[0],))

    def total_logp(x_):
        logp = jax.nn.log_softmax(classifier_fn(x_, t), axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1))

    return jax.grad(total_logp)(x)


def _classifier_score(score, logp_grad, y, scale, x, t):
    y = _batch_labels(y, x)
    return score(x, t) + jnp.asarray(scale, x.dtype) * logp_grad(x, t, y)


def classifier_guidance(score_fn: ScoreFn, classifier_fn: ClassifierFn | None = None,
                        y: Any = None, scale: float = 1.0, *,
                        classifier_logp_grad_fn: Callable | None = None) -> Partial:
    """Classifier guidance ``score_fn(x, t) + scale * grad_x log p_t(y | x)`` as a ``Partial``.

    Give either ``classifier_fn(x, t) -> logits`` (the gradient of the selected log-softmax is
    taken with ``jax.grad``, :func:`classifier_logp_grad`) or ``classifier_logp_grad_fn(x, t, y)
    -> grad_x log p_t(y | x)``.  ``y`` is an int or ``(B,)`` labels; it and ``scale`` are data of
    the returned pytree, so a sampler compiled for one label serves all.  ``score_fn`` may itself
    be a guided or label score at fixed labels; it and ``classifier_fn`` may be ``Partial``\\ s
    carrying parameters.
    """
    if (classifier_fn is None) == (classifier_logp_grad_fn is None):
        raise ValueError("classifier_guidance needs exactly one of classifier_fn(x, t) -> logits "
                         "and classifier_logp_grad_fn(x, t, y) -> grad_x log p_t(y | x).")
    check_scale(scale, "classifier guidance scale")
    if classifier_fn is not None:
        grad_fn = Partial(classifier_logp_grad, as_score_pytree(classifier_fn, "classifier_fn"))
    else:
        grad_fn = as_score_pytree(classifier_logp_grad_fn, "classifier_logp_grad_fn",
                                  "(x, t, y) -> grad")
    return Partial(_classifier_score, as_score_pytree(score_fn), grad_fn, _labels(y),
                   jnp.asarray(scale))


def pc_conditional_sample(score_fn: ScoreFn, classifier_fn: ClassifierFn | None, y: Any,
                          sde: SDE, shape: Sequence[int], rng: jax.Array, *, scale: float = 1.0,
                          classifier_logp_grad_fn: Callable | None = None,
                          **pc_options: Any) -> SampleResult:
    """Class-conditional PC sampling (official ``get_pc_conditional_sampler``):
    :func:`scoresde_jax.samplers.pc_sample` of :func:`classifier_guidance`; ``pc_options`` are
    the keyword options of ``pc_sample`` (``x_init`` and ``dtype`` included).  ``nfe`` counts
    evaluations of the guided score (each one score and one classifier-gradient evaluation)."""
    guided = classifier_guidance(score_fn, classifier_fn, y, scale,
                                 classifier_logp_grad_fn=classifier_logp_grad_fn)
    return pc_sample(guided, sde, shape, rng, **pc_options)


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


# --- flax networks ---------------------------------------------------------------------------------
def model_label_score_fn(sde: SDE, model: Any, params: Any, *, continuous: bool = True
                         ) -> Partial:
    """The label score function ``(x, t, y) -> score`` of a class-conditional flax network with
    ``params`` (the parameterization of ``(sde.kind, continuous)``); ValueError for an
    unconditional network."""
    null_label(model)
    return get_score_fn(sde, get_model_fn(model, params), continuous=continuous)


def model_classifier_fn(sde: SDE, classifier: Any, params: Any) -> Partial:
    """``classifier_fn(x, t) -> logits`` of a :class:`~scoresde_jax.models.NoiseConditionalClassifier`
    trained with :func:`scoresde_jax.losses.get_classifier_loss_fn` on ``sde``."""
    return get_logits_fn(sde, get_model_fn(classifier, params))


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


# --- likelihood ------------------------------------------------------------------------------------
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
