"""The one generation path: a jitted round of samples of a model, used by training snapshots, the
``sample`` job and the ``eval`` job.

:func:`make_generator` builds ``gen(params, rng, k) -> (samples, nfe)``: a prior draw, the
sampler of a :class:`SamplerSpec` on the model's score (unconditional, class-conditional with
classifier-free guidance, or classifier-guided, :class:`Conditioning`), the inverse data scaler,
and for images ``trunc(clip(255 x))`` as uint8 (the paper's quantization); vector data come back
as they are. The batch is sharded over the mesh's ``'data'`` axis when it splits evenly over the
devices; labels and guidance scales are traced values, so one compilation serves every round,
class and scale.

:func:`generate` runs such rounds resumably: round ``k`` of ``batch_size`` draws from
``fold_in(PRNGKey(seed), k)`` and sample ``i = k * batch_size + j`` gets the class
``classes[i % len(classes)]``, so a resumed run gives what an unbroken one gives.
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

__all__ = ["Conditioning", "Generator", "SamplerSpec", "generate", "make_generator",
           "round_labels", "sample_classes"]


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


def sample_classes(classes: Sequence[int], num_samples: int) -> np.ndarray:
    """The class of each of ``num_samples`` samples: ``classes`` cycled."""
    classes = np.asarray(classes, np.int32).reshape(-1)
    if classes.size == 0:
        raise ValueError("classes must name at least one class.")
    return np.resize(classes, int(num_samples))


def round_labels(classes: Sequence[int], k: int, batch_size: int) -> np.ndarray:
    """The classes of round ``k``: sample ``i = k * batch_size + j`` gets ``classes[i % len]``."""
    c = np.asarray(classes, np.int32)
    return c[(k * batch_size + np.arange(batch_size)) % len(c)]


class Generator(NamedTuple):
    """``gen(params, rng, k) -> (samples, nfe)``: round ``k``'s samples, replicated on every
    device; ``labels(k)`` its classes (None: unconditional)."""

    jitted: Any
    cond: Conditioning
    batch_size: int
    classifier_params: Any = None

    def labels(self, k: int) -> np.ndarray | None:
        if self.cond.classes is None:
            return None
        return round_labels(self.cond.classes, k, self.batch_size)

    def args(self, params: Any, rng: jax.Array, k: int = 0) -> tuple:
        """The arguments of ``jitted`` for round ``k`` (``jitted.trace(*args)`` times its
        compilation)."""
        y = self.labels(k)
        return (params, self.classifier_params, rng, None if y is None else jnp.asarray(y),
                jnp.asarray(self.cond.guidance), jnp.asarray(self.cond.classifier_scale))

    def __call__(self, params: Any, rng: jax.Array, k: int = 0):
        return self.jitted(*self.args(params, rng, k))


def make_generator(setup: Any, sampler: SamplerSpec, *, batch_size: int,
                   cond: Conditioning | None = None) -> Generator:
    """The jitted round of ``batch_size`` samples of ``setup``'s model with ``sampler`` under
    ``cond`` (module docstring); a classifier's EMA parameters are restored here."""
    cond = cond or Conditioning()
    s = setup
    shape = (int(batch_size),) + tuple(s.input_shape[1:])
    inverse = s.data.inverse_scaler()
    images = not s.data.vector
    shard = batch_size % s.mesh.devices.size == 0
    spec = NamedSharding(s.mesh, PartitionSpec("data"))
    clf = cond.classifier
    clf_params = None
    if clf is not None:
        clf_params, _ = restore_params(cond.classifier_workdir, clf.abstract_state())

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
        res = samplers.sample(score, s.sde, shape, k_sample, method=sampler.method,
                              nfe=sampler.nfe, eps=s.sampling_eps, x_init=x_init,
                              **sampler.options)
        x = inverse(res.x)
        if images:
            x = jnp.clip(x * 255.0, 0.0, 255.0).astype(jnp.uint8)
        return x, res.nfe

    jitted = jax.jit(one_round, out_shardings=distributed.replicated(s.mesh))
    return Generator(jitted, cond, int(batch_size), clf_params)


class Generated(NamedTuple):
    """The arrays of every round (``samples`` plus what ``extra`` added), the evaluations of the
    last computed round (None when every round was reused) and the seconds of each computed
    round."""

    arrays: dict[str, np.ndarray]
    nfe: int | None
    seconds: list[float]


def generate(gen: Generator, params: Any, out_dir: str, *, num_samples: int, seed: int,
             extra: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None,
             desc: str = "samples", progress: bool = True) -> Generated:
    """``num_samples`` samples of ``gen`` in resumable rounds under ``out_dir``
    (:func:`~scoresde_jax.jobs.rounds.run_rounds`); ``extra(samples)`` adds arrays to each round
    (e.g. features for a metric)."""
    key, used, seconds = jax.random.PRNGKey(seed), [], []

    def make_round(k: int, n: int) -> dict:
        t0 = time.perf_counter()
        x, nfe = distributed.to_host(gen(params, jax.random.fold_in(key, k), k))
        x = np.asarray(x)[:n]
        seconds.append(time.perf_counter() - t0)
        used.append(int(nfe))
        return {"samples": x, **(extra(x) if extra is not None else {})}

    arrays = run_rounds(out_dir, num_items=num_samples, batch_size=gen.batch_size,
                        make_round=make_round, desc=desc, progress=progress)
    return Generated(arrays, used[-1] if used else None, seconds)
