"""What every pretrained format becomes: :class:`Pretrained` (an SDE, a flax network and its
parameters, a score function, EDM's denoiser), the official-layout config that describes it, and
the check of a mapped parameter tree against the network's.

``Pretrained.score_fn(x, t, *class_labels)`` is the library's one network -> score adapter
(:func:`scoresde_jax.parameterization.get_score_fn`) on the network, so every sampler
(:func:`scoresde_jax.samplers.sample`), the likelihood and guidance take it as they take a
trained model's. ``x`` is NHWC in the model's data scale (``config.data.centered``: ``[-1, 1]``,
else ``[0, 1]``), ``t`` of shape ``(B,)``.

``Pretrained.denoise(x, sigma, class_labels=None)`` is EDM's ``D(x; sigma)``: the posterior mean
of clean data given ``x = data + sigma n`` in the model's data scale. A network with its own
``denoise`` method (EDM's preconditioned networks) computes it directly; for any other
network it is Tweedie's formula on the score at the time ``t`` with ``s(t) / a(t) = sigma``:
``D = x + sigma^2 a(t) score(a(t) x, t)``. ``class_labels`` are one-hot ``(B, num_classes)``
rows (an all-zero row: the null class) or ``None``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.tree_util import Partial

from scoresde_jax.parameterization import get_model_fn, get_score_fn
from scoresde_jax.samplers.grid import t_of_sigma_bar
from scoresde_jax.sde import SDE


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A pretrained model in this library's terms (see the module doc).

    ``model``: the flax module (``model.apply({'params': params}, x, labels, train=False[,
    class_labels=y])`` in the convention of :mod:`scoresde_jax.parameterization`); ``params``:
    its float32 parameters; ``continuous``: the row of the parameterization table; ``config``:
    the official-layout config of the model (what ``scoresde convert`` saves in a workdir);
    ``source``: the file or folder it came from; ``format``: ``'edm'``, ``'diffusers'`` or
    ``'score_sde'``; ``sampling_eps``: the smallest time the samplers should reach."""

    sde: SDE
    model: Any
    params: Any
    config: ml_collections.ConfigDict
    continuous: bool = True
    num_classes: int = 0
    sampling_eps: float = 1e-5
    source: str = ""
    format: str = ""
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def score_fn(self) -> Partial:
        """``score_fn(x, t[, y])``: the score of the network (``y``: ``(B,)`` integer labels of a
        class-conditional model, ``num_classes`` = the null class)."""
        return get_score_fn(self.sde, get_model_fn(self.model, self.params),
                            continuous=self.continuous)

    def denoise(self, x: jax.Array, sigma: Any, class_labels: Optional[jax.Array] = None
                ) -> jax.Array:
        """EDM's ``D(x; sigma)`` (see the module doc); ``sigma`` a scalar or ``(B,)``."""
        x = jnp.asarray(x)
        sigma = jnp.broadcast_to(jnp.asarray(sigma, x.dtype).reshape(-1), (x.shape[0],))
        if hasattr(self.model, "denoise"):
            return _apply_denoise(self.model, self.params, x, sigma, class_labels)
        y = _integer_labels(class_labels, self.num_classes)
        return _tweedie(self.score_fn, self.sde, x, sigma, y)


@jax.jit
def _jitted_denoise(model_fn, x, sigma, class_labels):
    return model_fn(x, sigma, class_labels)


def _apply_denoise(model, params, x, sigma, class_labels):
    fn = Partial(DenoiseApply(model), {"params": params})
    return _jitted_denoise(fn, x, sigma, class_labels)


@dataclasses.dataclass(frozen=True)
class DenoiseApply:
    """``(variables, x, sigma, class_labels)`` -> ``model.denoise`` (a stable jit key)."""

    model: Any

    def __call__(self, variables, x, sigma, class_labels):
        return self.model.apply(variables, x, sigma, class_labels, method="denoise")


def _integer_labels(class_labels, num_classes: int):
    if class_labels is None or num_classes <= 0:
        return None
    y = jnp.asarray(class_labels)
    if y.ndim == 2:  # one-hot rows; an all-zero row is the null class
        return jnp.where(jnp.sum(y, axis=1) > 0, jnp.argmax(y, axis=1), num_classes)
    return y.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("sde",))
def _tweedie(score_fn, sde, x, sigma, y):
    t = t_of_sigma_bar(sde, sigma, 0.0, sde.T)
    a = sde.mean_coeff(t)[:, None, None, None]
    score = score_fn(a * x, t) if y is None else score_fn(a * x, t, y)
    return x + (sigma ** 2)[:, None, None, None] * a * score


def make_config(*, model: Mapping[str, Any], sde: str, sde_params: Mapping[str, Any],
                image_size: int, num_channels: int, centered: bool, continuous: bool = True,
                dataset: Optional[str] = None, sampling: Optional[Mapping[str, Any]] = None,
                batch_size: int = 64) -> ml_collections.ConfigDict:
    """The official-layout config of a pretrained model: ``model`` (``name`` and the network's
    arguments) plus the SDE's ``sde_params`` in ``config.model``, ``training.sde`` (``vesde`` |
    ``vpsde`` | ``edmsde``), the data shape and scale, a sampler and the training keys a workdir
    needs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.training = ml_collections.ConfigDict(dict(
        sde=sde, continuous=bool(continuous), batch_size=int(batch_size), n_iters=0,
        snapshot_freq=1000, log_freq=100, eval_freq=0, snapshot_freq_for_preemption=1000,
        snapshot_sampling=False, likelihood_weighting=False, reduce_mean=True,
        n_jitted_steps=1))
    c.optim = ml_collections.ConfigDict(dict(
        optimizer="Adam", lr=1e-4, beta1=0.9, eps=1e-8, weight_decay=0.0, warmup=0,
        grad_clip=1.0))
    m = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.items()}
    c.model = ml_collections.ConfigDict({**m, **dict(sde_params), "ema_rate": 0.9999,
                                         "dropout": float(m.get("dropout", 0.0))})
    if dataset is None:
        dataset = "CIFAR10" if (image_size, num_channels) == (32, 3) else "FOLDER"
    c.data = ml_collections.ConfigDict(dict(
        dataset=dataset, image_size=int(image_size), num_channels=int(num_channels),
        centered=bool(centered), random_flip=False, uniform_dequantization=False))
    c.eval = ml_collections.ConfigDict(dict(batch_size=int(batch_size), num_samples=64))
    c.sampling = ml_collections.ConfigDict(dict(sampling or {"method": "heun", "num_steps": 18}))
    return c


class WeightMismatchError(ValueError):
    """A pretrained file's weights do not fit the network its configuration describes."""


def _flat(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flat(v, key))
        else:
            out[key] = v
    return out


def _listing(names, limit: int = 8) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)"
                                       if len(names) > limit else "")


def check_and_nest(flat: Mapping[str, np.ndarray], expected: Any, *, what: str) -> dict:
    """``flat`` (``'a/b/c' -> array``) as the nested float32 tree of ``expected`` (a tree of
    ``ShapeDtypeStruct``), or :class:`WeightMismatchError` naming every missing, unexpected
    and mis-shaped entry."""
    exp = _flat(expected)
    missing = sorted(set(exp) - set(flat))
    unexpected = sorted(set(flat) - set(exp))
    bad = [f"{k}: file {tuple(np.shape(flat[k]))} vs network {tuple(exp[k].shape)}"
           for k in sorted(set(flat) & set(exp)) if tuple(np.shape(flat[k])) != tuple(exp[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing from the file ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected in the file ({len(unexpected)}): {_listing(unexpected)}")
    if bad:
        problems.append(f"shape mismatches ({len(bad)}): {_listing(bad, 4)}")
    if problems:
        raise WeightMismatchError(f"{what}: the weights do not fit the network its "
                                  "configuration describes; " + "; ".join(problems))
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(np.asarray(value, np.float32))
    return out
