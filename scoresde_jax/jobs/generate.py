"""The one generation path: a jitted round of samples of a model, used by training snapshots, the
``sample`` job and the ``eval`` job.

:func:`make_generator` builds ``gen(params, keys, labels) -> (samples, nfe, finite)``: a prior draw, the
sampler of a :class:`SamplerSpec` on the model's score (unconditional, class-conditional with
classifier-free guidance, or classifier-guided, :class:`Conditioning`), the inverse data scaler,
and for images ``trunc(clip(255 x))`` as uint8 (the paper's quantization); vector data come back
as they are. The batch is sharded over the mesh's ``'data'`` axis when it splits evenly over the
devices; labels and guidance scales are traced values, so one compilation serves every round,
class and scale.

:func:`generate` runs such rounds resumably. Image ``i`` of seed ``s`` draws from its own key
``fold_in(PRNGKey(s), i)`` (or ``PRNGKey(seeds[i])``, EDM's ``--seeds``) and gets the class
``classes[i % len(classes)]``: it is the same at any batch size and device count, and a resumed run
gives what an unbroken one gives. Non-finite samples are an error, never a black image.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from scoresde_jax import guidance as guidance_lib
from scoresde_jax import samplers
from scoresde_jax.jobs.rounds import run_rounds
from scoresde_jax.training import distributed, restore_params

__all__ = ["Conditioning", "Generator", "NonFiniteSamplesError", "SamplerSpec", "generate",
           "image_keys", "image_labels", "make_generator"]


class SamplerSpec(NamedTuple):
    """A sampler and its options: ``method`` (a key of :data:`scoresde_jax.samplers.SAMPLERS`),
    its keyword ``options`` and an optional budget ``nfe`` of score evaluations."""

    method: str = "pc"
    options: Mapping[str, Any] = {}
    nfe: int | None = None

    def record(self) -> dict:
        """JSON-able description (results files)."""
        opts = {k: v if isinstance(v, (int, float, str, bool, type(None))) else repr(v)
                for k, v in self.options.items()}
        return {"method": self.method, "options": opts, "nfe_budget": self.nfe}


class Conditioning(NamedTuple):
    """What a round samples: ``classes`` (None: unconditional) at classifier-free guidance
    ``guidance``, or guided by the noise-conditional classifier of ``classifier`` (its setup; its
    EMA parameters are restored from ``classifier_workdir``) at ``classifier_scale``."""

    classes: tuple[int, ...] | None = None
    guidance: float = 0.0
    classifier: Any = None
    classifier_workdir: str | None = None
    classifier_scale: float = 0.0

    def record(self) -> dict:
        """JSON-able description (results files)."""
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


def image_labels(classes: Sequence[int], ids: Sequence[int]) -> np.ndarray:
    """The class of each image: image ``i`` (its position in the run) gets
    ``classes[i % len(classes)]``."""
    c = np.asarray(classes, np.int32).reshape(-1)
    if c.size == 0:
        raise ValueError("classes must name at least one class.")
    return c[np.asarray(ids, np.int64) % len(c)]


@jax.jit
def _fold_keys(seed: jax.Array, ids: jax.Array) -> jax.Array:
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(ids)


@jax.jit
def _seed_keys(seeds: jax.Array) -> jax.Array:
    return jax.vmap(jax.random.PRNGKey)(seeds)


def image_keys(*, seed: int | None = None, ids: Sequence[int] = (),
               seeds: Sequence[int] | None = None) -> np.ndarray:
    """Per-image keys ``(n, 2)`` uint32: image ``i`` of ``--seed s`` draws from
    ``fold_in(PRNGKey(s), i)``; with ``seeds`` (EDM's ``--seeds``) image ``j`` draws from
    ``PRNGKey(seeds[j])``. An image is the same at any batch size and device count."""
    if seeds is not None:
        return np.asarray(_seed_keys(jnp.asarray(np.asarray(seeds, np.uint32))))
    return np.asarray(_fold_keys(jnp.asarray(seed, jnp.uint32), jnp.asarray(ids, jnp.uint32)))


class NonFiniteSamplesError(ValueError):
    """A round of samples holds NaN or inf."""


class Generator(NamedTuple):
    """``gen(params, keys, labels=None) -> (samples, nfe, finite)``: one image per key (``keys``
    ``(batch_size, 2)`` uint32, see :func:`image_keys`), replicated on every device; ``finite``
    says per image whether the sampler's output was finite (before quantization)."""

    jitted: Any
    cond: Conditioning
    batch_size: int
    classifier_params: Any = None

    def args(self, params: Any, keys: Any, labels: Any = None) -> tuple:
        """The arguments of ``jitted`` (``jitted.trace(*args)`` times its compilation)."""
        if self.cond.classes is not None and labels is None:
            labels = image_labels(self.cond.classes, range(self.batch_size))
        return (params, self.classifier_params, jnp.asarray(keys),
                None if labels is None else jnp.asarray(labels, jnp.int32),
                jnp.asarray(self.cond.guidance), jnp.asarray(self.cond.classifier_scale))

    def __call__(self, params: Any, keys: Any, labels: Any = None):
        return self.jitted(*self.args(params, keys, labels))

    def from_rng(self, params: Any, rng: jax.Array):
        """Samples from one key (training snapshots): ``batch_size`` images of ``split(rng)``."""
        return self(params, jax.random.split(rng, self.batch_size))


def make_generator(setup: Any, sampler: SamplerSpec, *, batch_size: int,
                   cond: Conditioning | None = None) -> Generator:
    """The jitted round of ``batch_size`` samples of ``setup``'s model with ``sampler`` under
    ``cond`` (module docstring); a classifier's EMA parameters are restored here. Each image is
    sampled on its own (``vmap`` over its key and label), so it does not depend on the other
    images of its round."""
    cond = cond or Conditioning()
    s = setup
    one_shape = (1,) + tuple(s.input_shape[1:])
    inverse = s.data.inverse_scaler()
    images = not s.data.vector
    shard = batch_size % s.mesh.devices.size == 0
    spec = NamedSharding(s.mesh, PartitionSpec("data"))
    clf = cond.classifier
    clf_params = None
    if clf is not None:
        clf_params, _ = restore_params(cond.classifier_workdir, clf.abstract_state())

    def one_image(params, clf_params, key, y, w, scale):
        k_init, k_sample = jax.random.split(key)
        x_init = s.sde.prior_sampling(k_init, one_shape)
        score = guidance_lib.model_score_fn(
            s.sde, s.model, params, continuous=s.continuous,
            labels=None if y is None else y[None], guidance=w,
            classifier=None if clf is None else clf.model, classifier_params=clf_params,
            classifier_sde=None if clf is None else clf.sde, classifier_scale=scale)
        res = samplers.sample(score, s.sde, one_shape, k_sample, method=sampler.method,
                              nfe=sampler.nfe, eps=s.sampling_eps, x_init=x_init,
                              **sampler.options)
        return res.x[0], res.nfe

    def one_round(params, clf_params, keys, y, w, scale):
        if shard:
            keys = jax.lax.with_sharding_constraint(keys, spec)
            if y is not None:
                y = jax.lax.with_sharding_constraint(y, spec)
        draw = jax.vmap(one_image, in_axes=(None, None, 0, None if y is None else 0, None, None))
        x, nfe = draw(params, clf_params, keys, y, w, scale)
        finite = jnp.isfinite(x).reshape(x.shape[0], -1).all(axis=1)
        x = inverse(x)
        if images:
            x = jnp.clip(x * 255.0, 0.0, 255.0).astype(jnp.uint8)
        return x, jnp.max(nfe), finite

    jitted = jax.jit(one_round, out_shardings=distributed.replicated(s.mesh))
    return Generator(jitted, cond, int(batch_size), clf_params)


class Generated(NamedTuple):
    """The arrays of every round (``samples`` plus what ``extra`` added), the evaluations of the
    last computed round (None when every round was reused) and the seconds of each computed
    round."""

    arrays: dict[str, np.ndarray]
    nfe: int | None
    seconds: list[float]


def generate(gen: Generator, params: Any, out_dir: str, *, num_samples: int | None = None,
             seed: int = 0, seeds: Sequence[int] | None = None,
             extra: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
             record: Mapping | None = None, overwrite: bool = False,
             desc: str = "samples", progress: bool = True) -> Generated:
    """Images ``0 .. num_samples - 1`` of ``seed`` (or one image per entry of ``seeds``) from
    ``gen`` in resumable rounds under ``out_dir`` (:func:`~scoresde_jax.jobs.rounds.run_rounds`,
    tied to ``record``); ``extra(samples)`` adds arrays to each round (e.g. features for a
    metric). A round with a non-finite sample raises :class:`NonFiniteSamplesError`."""
    n_total = len(seeds) if seeds is not None else int(num_samples)
    bs, used, seconds = gen.batch_size, [], []

    def make_round(k: int, n: int) -> dict:
        t0 = time.perf_counter()
        ids = np.arange(k * bs, k * bs + bs)
        ids = np.minimum(ids, n_total - 1)  # the last round is padded; the padding is dropped
        keys = image_keys(seeds=np.asarray(seeds)[ids]) if seeds is not None else \
            image_keys(seed=seed, ids=ids)
        labels = None if gen.cond.classes is None else image_labels(gen.cond.classes, ids)
        x, nfe, finite = distributed.to_host(gen(params, keys, labels))
        if not np.asarray(finite)[:n].all():
            bad = int((~np.asarray(finite)[:n]).sum())
            raise NonFiniteSamplesError(
                f"{bad} of the {n} samples of round {k} are NaN/inf: the checkpoint has diverged "
                f"or the guidance is not finite (guidance {gen.cond.guidance}, classifier scale "
                f"{gen.cond.classifier_scale}); pick another --checkpoint or guidance.")
        x = np.asarray(x)[:n]
        seconds.append(time.perf_counter() - t0)
        used.append(int(nfe))
        return {"samples": x, **(extra(x) if extra is not None else {})}

    arrays = run_rounds(out_dir, num_items=n_total, batch_size=bs, make_round=make_round,
                        record=record, overwrite=overwrite, desc=desc, progress=progress)
    return Generated(arrays, used[-1] if used else None, seconds)
