"""Denoising score-matching objectives (Song et al., ICLR 2021, eq. 7; SMLD and DDPM as its N-level versions).

Two layers:

* per-example losses whose randomness is an argument (``t``, ``labels`` and the Gaussian noise ``z``), so a test
  or a user can evaluate them at chosen points: :func:`dsm_loss`, :func:`smld_loss`, :func:`ddpm_loss`,
  :func:`edm_loss`;
* wrappers that draw that randomness from a key (``*_from_key``) and :func:`get_loss_fn`, which builds the
  scalar training/evaluation objective ``loss_fn(params, batch, rng) -> (loss, aux)`` of a flax model.

``reduce_mean=False`` reduces the squared error over data dimensions by ``0.5 * sum`` and ``reduce_mean=True`` by
``mean``, as the official code.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoresde_jax.parameterization import get_logits_fn, get_model_fn, get_score_fn
from scoresde_jax.sde import SDE
from scoresde_jax.utils import batch_mul

__all__ = [
    "dsm_loss",
    "smld_loss",
    "ddpm_loss",
    "edm_loss",
    "edm_loss_from_key",
    "LOSSES",
    "dsm_loss_from_key",
    "smld_loss_from_key",
    "ddpm_loss_from_key",
    "get_loss_fn",
    "LossAux",
    "DISCRETE_LOSSES",
    "classifier_loss",
    "get_classifier_loss_fn",
    "batch_labels",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def _reduce(sq: jax.Array, reduce_mean: bool) -> jax.Array:
    sq = sq.reshape(sq.shape[0], -1)
    return jnp.mean(sq, axis=-1) if reduce_mean else 0.5 * jnp.sum(sq, axis=-1)


def dsm_loss(score_fn: ScoreFn, x: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE,
             likelihood_weighting: bool = False, reduce_mean: bool = False) -> jax.Array:
    """Continuous-time denoising score matching, per example (shape ``(B,)``).

    With ``x_t = a(t) x + s(t) z`` the conditional score is ``-z / s(t)`` and

        loss = lambda(t) * reduce(|| score_fn(x_t, t) + z / s(t) ||^2),

    with ``lambda(t) = s(t)^2`` by default (written ``reduce(|| s(t) score + z ||^2)``) and ``lambda(t) = g(t)^2``
    with ``likelihood_weighting`` (Song, Durkan, Murray & Ermon 2021: the weighted loss bounds the negative
    log-likelihood).
    """
    mean, std = sde.marginal_prob(x, t)
    x_t = mean + batch_mul(std, z)
    score = score_fn(x_t, t)
    if not likelihood_weighting:
        return _reduce(jnp.square(batch_mul(std, score) + z), reduce_mean)
    g2 = sde.diffusion_coeff(jnp.asarray(t, x.dtype)) ** 2
    return _reduce(jnp.square(score + batch_mul(1.0 / std, z)), reduce_mean) * g2


def smld_loss(model_fn: ModelFn, x: jax.Array, labels: jax.Array, z: jax.Array, *, sde: SDE,
              reduce_mean: bool = False) -> jax.Array:
    """Discrete SMLD / NCSN loss (Song & Ermon 2019), per example.

    ``labels`` index the *descending* noise levels ``sigma_{N-1-labels}`` (the NCSN convention); with
    ``x~ = x + sigma z`` the loss is ``sigma^2 reduce(|| s_theta(x~, label) + z / sigma ||^2)``.
    """
    if sde.kind != "ve":
        raise TypeError(f"smld_loss needs a VESDE, got {type(sde).__name__}; use ddpm_loss for VP.")
    sigmas = jnp.asarray(sde.discrete_sigmas[::-1].copy(), x.dtype)[labels]
    noise = batch_mul(sigmas, z)
    score = model_fn(x + noise, labels)
    target = -batch_mul(1.0 / sigmas, z)
    return _reduce(jnp.square(score - target), reduce_mean) * sigmas**2


def ddpm_loss(model_fn: ModelFn, x: jax.Array, labels: jax.Array, z: jax.Array, *, sde: SDE,
              reduce_mean: bool = False) -> jax.Array:
    """Discrete DDPM loss (Ho et al. 2020), per example: ``reduce(|| eps_theta(x_i, i) - z ||^2)`` with
    ``x_i = sqrt(alphabar_i) x + sqrt(1 - alphabar_i) z``."""
    if sde.kind != "vp":
        raise TypeError(f"ddpm_loss needs a VPSDE, got {type(sde).__name__}; use smld_loss for VE and the "
                        "continuous dsm_loss for sub-VP.")
    a = jnp.asarray(sde.sqrt_alphas_cumprod, x.dtype)[labels]
    s = jnp.asarray(sde.sqrt_1m_alphas_cumprod, x.dtype)[labels]
    x_i = batch_mul(a, x) + batch_mul(s, z)
    return _reduce(jnp.square(model_fn(x_i, labels) - z), reduce_mean)


def edm_loss(score_fn: ScoreFn, x: jax.Array, sigma: jax.Array, z: jax.Array, *, sde: SDE,
             reduce_mean: bool = False) -> jax.Array:
    """EDM's loss (Karras et al. 2022, eq. 8) on the ``sigma(t) = t`` SDE, per example (shape ``(B,)``):

        loss = lambda(sigma) reduce(|| D(x + sigma z; sigma) - x ||^2),
        lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2,

    with the denoiser ``D(x_t; sigma) = x_t + sigma^2 score(x_t, t = sigma)`` (Tweedie) and ``sigma_data``
    of ``sde``.  For data of std ``sigma_data`` and the exact denoiser, ``reduce_mean`` gives 1 at every
    sigma (EDM's unit effective weight).
    """
    if getattr(sde, "kind", None) != "edm":
        raise TypeError(f"edm_loss needs the EDMSDE (sigma(t) = t), got {type(sde).__name__}; "
                        "set config.training.sde='edmsde'.")
    sigma = jnp.asarray(sigma, x.dtype)
    x_t = x + batch_mul(sigma, z)
    denoised = x_t + batch_mul(sigma**2, score_fn(x_t, sigma))
    weight = (sigma**2 + sde.sigma_data**2) / (sigma * sde.sigma_data) ** 2
    return _reduce(jnp.square(denoised - x), reduce_mean) * weight


# --- randomness drawn from a key --------------------------------------------------------------


def dsm_loss_from_key(score_fn: ScoreFn, x: jax.Array, rng: jax.Array, *, sde: SDE, eps: float = 1e-5,
                      likelihood_weighting: bool = False, reduce_mean: bool = False) -> jax.Array:
    """:func:`dsm_loss` with ``t ~ U(eps, T)`` and ``z ~ N(0, I)`` drawn from ``rng``."""
    k_t, k_z = jax.random.split(rng)
    t = jax.random.uniform(k_t, (x.shape[0],), x.dtype, minval=eps, maxval=sde.T)
    z = jax.random.normal(k_z, x.shape, x.dtype)
    return dsm_loss(score_fn, x, t, z, sde=sde, likelihood_weighting=likelihood_weighting,
                    reduce_mean=reduce_mean)


def edm_loss_from_key(score_fn: ScoreFn, x: jax.Array, rng: jax.Array, *, sde: SDE,
                      P_mean: float = -1.2, P_std: float = 1.2, reduce_mean: bool = False) -> jax.Array:
    """:func:`edm_loss` with EDM's log-normal ``log sigma ~ N(P_mean, P_std^2)`` and ``z ~ N(0, I)``."""
    k_s, k_z = jax.random.split(rng)
    sigma = jnp.exp(P_mean + P_std * jax.random.normal(k_s, (x.shape[0],), x.dtype))
    z = jax.random.normal(k_z, x.shape, x.dtype)
    return edm_loss(score_fn, x, sigma, z, sde=sde, reduce_mean=reduce_mean)


def _discrete_from_key(loss, model_fn, x, rng, *, sde, reduce_mean):
    """``loss`` at uniform levels ``labels ~ U{0, ..., N - 1}`` and ``z ~ N(0, I)`` drawn from ``rng``."""
    k_l, k_z = jax.random.split(rng)
    labels = jax.random.randint(k_l, (x.shape[0],), 0, sde.N)
    z = jax.random.normal(k_z, x.shape, x.dtype)
    return loss(model_fn, x, labels, z, sde=sde, reduce_mean=reduce_mean)


def smld_loss_from_key(model_fn: ModelFn, x: jax.Array, rng: jax.Array, *, sde: SDE,
                       reduce_mean: bool = False) -> jax.Array:
    """:func:`smld_loss` with uniform noise levels and ``z ~ N(0, I)`` drawn from ``rng``."""
    return _discrete_from_key(smld_loss, model_fn, x, rng, sde=sde, reduce_mean=reduce_mean)


def ddpm_loss_from_key(model_fn: ModelFn, x: jax.Array, rng: jax.Array, *, sde: SDE,
                       reduce_mean: bool = False) -> jax.Array:
    """:func:`ddpm_loss` with uniform timesteps and ``z ~ N(0, I)`` drawn from ``rng``."""
    return _discrete_from_key(ddpm_loss, model_fn, x, rng, sde=sde, reduce_mean=reduce_mean)


DISCRETE_LOSSES = {"ve": smld_loss_from_key, "vp": ddpm_loss_from_key}
"""The discrete-time loss ``loss(model_fn, x, rng, *, sde, reduce_mean)`` of each ``sde.kind`` (sub-VP has none)."""


# --- the objective of a flax model ---------------------------------------------------------------


class LossAux(NamedTuple):
    """Per-example losses behind the scalar objective."""

    per_example: jax.Array


LOSSES = ("dsm", "edm")
"""The continuous objectives of :func:`get_loss_fn` (``loss=``): denoising score matching at ``t ~ U(eps,
T)`` and EDM's loss (the default on the EDMSDE)."""


def get_loss_fn(sde: SDE, model: Any, *, train: bool, continuous: bool = True,
                likelihood_weighting: bool = False, reduce_mean: bool = False, eps: float = 1e-5,
                loss: str | None = None, P_mean: float = -1.2, P_std: float = 1.2
                ) -> Callable[[Any, Any, jax.Array], tuple[jax.Array, LossAux]]:
    """The scalar objective ``loss_fn(params, batch, rng) -> (loss, LossAux)`` of a network.

    ``model`` is a flax module (or a function with the signature of ``Module.apply``) called as
    ``apply({'params': params}, x, labels, train=train, rngs={'dropout': key})``.  ``batch`` is the data array
    ``(B, H, W, C)`` already scaled as the model expects, or a dict holding it under ``'image'``.
    A class-conditional network (``model.num_classes > 0``) also gets ``class_labels=batch['label']``
    (it drops them to the null class at its ``class_dropout`` rate when training).
    The loss is chosen like the official ``get_step_fn``: continuous DSM for any SDE when ``continuous``, else
    SMLD for VE and DDPM for VP (discrete sub-VP does not exist).  ``loss='edm'`` (the default on the
    EDMSDE, whose networks are always continuous) is :func:`edm_loss_from_key` with ``P_mean, P_std``.
    """
    conditional = int(getattr(model, "num_classes", 0) or 0) > 0
    edm = getattr(sde, "kind", None) == "edm"
    loss = ("edm" if edm else "dsm") if loss is None else str(loss).lower()
    if loss not in LOSSES:
        raise ValueError(f"Unknown loss {loss!r} (config.training.loss); use one of {LOSSES}.")
    if loss == "edm" and not edm:
        raise ValueError("loss='edm' needs the EDMSDE; set config.training.sde='edmsde'.")
    if loss == "edm" and likelihood_weighting:
        raise ValueError("EDM's loss has its own weighting; set config.training.likelihood_weighting=False.")
    continuous = continuous or edm
    if not continuous:
        if getattr(sde, "kind", None) == "subvp":
            raise ValueError("Discrete training is not defined for sub-VP; set config.training.continuous=True.")
        if getattr(sde, "kind", None) not in DISCRETE_LOSSES:
            raise TypeError(f"No discrete loss for {type(sde).__name__}.")
        if likelihood_weighting:
            raise ValueError("likelihood_weighting needs continuous training; set config.training.continuous=True "
                             "or config.training.likelihood_weighting=False.")

    def loss_fn(params, batch, rng):
        x = batch["image"] if isinstance(batch, dict) else batch
        k_loss, k_drop = jax.random.split(rng)
        cond = (batch_labels(batch, "get_loss_fn"),) if conditional else ()
        network = get_model_fn(model, params, train=train, rng=k_drop if train else None)
        if loss == "edm":
            score = get_score_fn(sde, network, continuous=True)
            losses = edm_loss_from_key(lambda x_t, t: score(x_t, t, *cond), x, k_loss, sde=sde,
                                       P_mean=P_mean, P_std=P_std, reduce_mean=reduce_mean)
        elif continuous:
            score = get_score_fn(sde, network, continuous=True)
            losses = dsm_loss_from_key(lambda x_t, t: score(x_t, t, *cond), x, k_loss, sde=sde, eps=eps,
                                       likelihood_weighting=likelihood_weighting, reduce_mean=reduce_mean)
        else:
            losses = DISCRETE_LOSSES[sde.kind](lambda x_i, labels: network(x_i, labels, *cond), x, k_loss,
                                               sde=sde, reduce_mean=reduce_mean)
        return jnp.mean(losses), LossAux(per_example=losses)

    return loss_fn


# --- the noise-conditional classifier ----------------------------------------------------------


def batch_labels(batch: Any, reader: str) -> jax.Array:
    """The integer class labels ``batch['label']`` of a dict batch (ValueError naming ``reader``)."""
    if not isinstance(batch, dict) or "label" not in batch:
        raise ValueError(f"{reader}: a class-conditional model or a classifier needs batches "
                         "{'image', 'label'} (every scoresde_jax.data pipeline gives them).")
    return jnp.asarray(batch["label"]).astype(jnp.int32)


def classifier_loss(logits_fn: Callable[[jax.Array, jax.Array], jax.Array], x: jax.Array,
                    y: jax.Array, t: jax.Array, z: jax.Array, *, sde: SDE) -> jax.Array:
    """Cross-entropy of a time-dependent classifier on perturbed data, per example (shape ``(B,)``):

        loss = -log softmax(logits_fn(x_t, t))[y],    x_t = a(t) x + s(t) z

    (paper appendix I.1: the classifier of ``grad_x log p_t(y | x)`` is trained on ``p_t``).
    """
    mean, std = sde.marginal_prob(x, t)
    logp = jax.nn.log_softmax(logits_fn(mean + batch_mul(std, z), t), axis=-1)
    return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


def get_classifier_loss_fn(sde: SDE, classifier: Any, *, train: bool, eps: float = 1e-5
                           ) -> Callable[[Any, Any, jax.Array], tuple[jax.Array, LossAux]]:
    """``loss_fn(params, batch, rng) -> (loss, LossAux)``: :func:`classifier_loss` at
    ``t ~ U(eps, T)``, ``z ~ N(0, I)``, the classifier conditioned on the continuous-time network
    label of ``sde`` (``sigma(t)`` for VE, ``(N - 1) t`` for VP / sub-VP, as the score networks and
    :func:`scoresde_jax.guidance.model_classifier_fn`). ``batch`` is ``{'image', 'label'}``."""
    def loss_fn(params, batch, rng):
        x, y = batch["image"] if isinstance(batch, dict) else batch, batch_labels(batch,
                                                                                    "classifier")
        k_t, k_z, k_drop = jax.random.split(rng, 3)
        t = jax.random.uniform(k_t, (x.shape[0],), x.dtype, minval=eps, maxval=sde.T)
        z = jax.random.normal(k_z, x.shape, x.dtype)
        network = get_model_fn(classifier, params, train=train, rng=k_drop if train else None)
        losses = classifier_loss(get_logits_fn(sde, network), x, y, t, z, sde=sde)
        return jnp.mean(losses), LossAux(per_example=losses)

    return loss_fn
