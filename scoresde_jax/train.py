"""Training: jitted train/eval steps over a device mesh, and the training loop.

One call of the compiled train function runs ``training.n_jitted_steps`` optimizer steps with
``lax.scan``; each step may accumulate ``training.grad_accum_steps`` micro-batches through
``optax.MultiSteps``. The state is replicated and the batch sharded over the mesh axis ``'data'``
(:mod:`scoresde_jax.distributed`), so the same code runs on one CPU, eight devices or several hosts and
gives the same numbers. Step ``s`` draws its randomness from ``fold_in(fold_in(rng, TRAIN), s)`` and the data
iterator's state is checkpointed with the train state, so a resumed run reproduces an unbroken one.

The loop (:func:`train`) logs to ``<workdir>/metrics.jsonl`` and TensorBoard, writes periodic and
preemption checkpoints with Orbax, samples a PNG grid at each snapshot, and stops on a non-finite loss
keeping the last good checkpoint. :func:`train_and_evaluate` adds final sampling and the quality metric.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from scoresde_jax import distributed
from scoresde_jax.checkpoint import Checkpointer
from scoresde_jax.metrics_io import MetricWriter, save_image_grid
from scoresde_jax.optim import get_optimizer
from scoresde_jax.train_state import TrainState, create_train_state, ema_update

log = logging.getLogger("scoresde_jax.train")

# Independent random streams of one run: fold_in(fold_in(state.rng, STREAM), step).
TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM = 0, 1, 2

LossFn = Callable[[Any, Any, jax.Array], tuple[jax.Array, Any]]


class StepMetrics(NamedTuple):
    """Per-step training metrics (stacked to ``(n_jitted_steps,)`` by the compiled function)."""

    loss: jax.Array
    grad_norm: jax.Array


class NonFiniteLossError(RuntimeError):
    """Raised when the training loss becomes NaN or inf; the last good checkpoint is kept."""


def stream_key(rng: jax.Array, stream: int, step: jax.Array | int) -> jax.Array:
    """``fold_in(fold_in(rng, stream), step)``: the key of one step of one random stream."""
    return jax.random.fold_in(jax.random.fold_in(rng, stream), step)


# --- steps ---------------------------------------------------------------------------------------


def _micro_batches(batch: Any, k: int) -> Any:
    """``(B, ...) -> (k, B/k, ...)`` with micro-batch ``j`` = rows ``j, j+k, ...`` (every device keeps a share)."""

    def split(x):
        if x.shape[0] % k:
            raise ValueError(
                f"Batch of {x.shape[0]} does not split into training.grad_accum_steps={k} micro-batches; "
                "make training.batch_size a multiple of grad_accum_steps * device count."
            )
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def make_step_fn(
    loss_fn: LossFn, *, grad_accum_steps: int = 1
) -> Callable[[TrainState, Any], tuple[TrainState, StepMetrics]]:
    """One optimizer step ``(state, batch) -> (state, StepMetrics)`` (not jitted; scanned by the caller).

    With ``grad_accum_steps = k > 1`` the state's ``tx`` must be an ``optax.MultiSteps`` over ``k``
    steps (:func:`scoresde_jax.optim.get_optimizer` builds it): the batch is split into ``k``
    micro-batches fed to ``tx.update`` in turn, and the ``k``-th call applies the mean gradient.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step_fn(state: TrainState, batch: Any) -> tuple[TrainState, StepMetrics]:
        key = stream_key(state.rng, TRAIN_STREAM, state.step)
        if grad_accum_steps == 1:
            (loss, _), grads = grad_fn(state.params, batch, key)
            return state.apply_gradients(grads), StepMetrics(loss, optax.tree.norm(grads))

        def micro(carry, xs):
            params, opt_state = carry
            i, mb = xs
            (loss, _), grads = grad_fn(state.params, mb, jax.random.fold_in(key, i))
            updates, opt_state = state.tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), (loss, optax.tree.norm(grads))

        xs = (jnp.arange(grad_accum_steps), _micro_batches(batch, grad_accum_steps))
        (params, opt_state), (losses, norms) = jax.lax.scan(micro, (state.params, state.opt_state), xs)
        new = state.replace(
            step=state.step + 1,
            params=params,
            opt_state=opt_state,
            ema_params=ema_update(state.ema_params, params, rate=state.ema_rate),
        )
        return new, StepMetrics(jnp.mean(losses), jnp.mean(norms))

    return step_fn


def make_train_fn(
    loss_fn: LossFn, mesh: jax.sharding.Mesh, *, grad_accum_steps: int = 1, donate: bool = True
) -> Callable[[TrainState, Any], tuple[TrainState, StepMetrics]]:
    """Jitted ``(state, batches) -> (state, StepMetrics)`` running ``batches.shape[0]`` steps with ``lax.scan``.

    ``batches`` has shape ``(n_jitted_steps, B, ...)`` and is sharded on axis 1 over ``'data'``; the
    state is replicated. Compiles once per batch shape.
    """
    step_fn = make_step_fn(loss_fn, grad_accum_steps=grad_accum_steps)

    def multi_step(state, batches):
        if jax.tree.leaves(batches)[0].shape[0] == 1:
            # One step: no scan. On XLA:CPU (jax 0.10.2) the backward pass of the conv U-Net runs
            # 12-30x slower inside lax.scan (the forward pass does not); measured with the digits
            # DDPM++. Keep training.n_jitted_steps = 1 on CPU, use 5 on GPU/TPU.
            state, metrics = step_fn(state, jax.tree.map(lambda x: x[0], batches))
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(step_fn, state, batches)

    rep = distributed.replicated(mesh)
    return jax.jit(
        multi_step,
        in_shardings=(rep, distributed.batch_sharding(mesh, leading=1)),
        out_shardings=(rep, rep),
        donate_argnums=(0,) if donate else (),
    )


def make_eval_fn(loss_fn: LossFn, mesh: jax.sharding.Mesh) -> Callable[[TrainState, Any], jax.Array]:
    """Jitted ``(state, batch) -> loss`` of the EMA parameters (``loss_fn`` built with ``train=False``)."""

    def eval_step(state, batch):
        loss, _ = loss_fn(state.ema_params, batch, stream_key(state.rng, EVAL_STREAM, state.step))
        return loss

    rep = distributed.replicated(mesh)
    return jax.jit(eval_step, in_shardings=(rep, distributed.batch_sharding(mesh)), out_shardings=rep)


# --- building blocks from a config ---------------------------------------------------------------


class Setup(NamedTuple):
    """What a config turns into (shared by training, sampling and evaluation)."""

    sde: Any
    sampling_eps: float
    model: Any
    tx: optax.GradientTransformation
    mesh: jax.sharding.Mesh
    input_shape: tuple[int, ...]  # the global training batch shape


def _bool(config, section: str, key: str, default: bool) -> bool:
    return bool(getattr(config, section).get(key, default))


def setup(config: Any, *, model: Any = None, mesh: jax.sharding.Mesh | None = None) -> Setup:
    """SDE, model, optimizer and mesh of a config, with the config checked for the usual mistakes."""
    from scoresde_jax.sde import get_sde

    sde, sampling_eps = get_sde(config)
    if model is None:
        from scoresde_jax.models import create_model

        model = create_model(config)
    mesh = mesh or distributed.make_mesh()
    t = config.training
    distributed.check_batch_size(int(t.batch_size), mesh)
    if int(t.get("eval_freq", 0)) > 0 and "eval" in config and "batch_size" in config.eval:
        distributed.check_batch_size(int(config.eval.batch_size), mesh, name="eval.batch_size")
    accum = int(t.get("grad_accum_steps", 1))
    if int(t.batch_size) % (accum * mesh.devices.size):
        raise ValueError(
            f"training.batch_size={t.batch_size} must be a multiple of grad_accum_steps ({accum}) x devices "
            f"({mesh.devices.size}) so every micro-batch splits evenly."
        )
    n_jit = int(t.get("n_jitted_steps", 1))
    for key in ("snapshot_freq", "log_freq", "eval_freq", "snapshot_freq_for_preemption"):
        if key in t and int(t[key]) % n_jit:
            raise ValueError(
                f"training.{key}={t[key]} is not a multiple of training.n_jitted_steps={n_jit}; "
                f"checkpoints, logs and the end of training happen between dispatches of {n_jit} steps."
            )
    shape = (int(t.batch_size),) + data_shape(config)
    return Setup(sde, sampling_eps, model, get_optimizer(config), mesh, shape)


def get_loss_fn(config: Any, s: Setup, *, train: bool) -> LossFn:
    from scoresde_jax import losses

    t = config.training
    return losses.get_loss_fn(
        s.sde,
        s.model,
        train=train,
        continuous=_bool(config, "training", "continuous", True),
        likelihood_weighting=_bool(config, "training", "likelihood_weighting", False),
        reduce_mean=_bool(config, "training", "reduce_mean", False),
        eps=float(t.get("eps", 1e-5)),
    )


def init_state(config: Any, s: Setup) -> TrainState:
    """The step-0 state, computed under jit straight into the replicated sharding (same on every host)."""
    init = jax.jit(
        lambda rng: create_train_state(
            rng, s.model, s.tx, input_shape=(1,) + s.input_shape[1:], ema_rate=float(config.model.ema_rate)
        ),
        out_shardings=distributed.replicated(s.mesh),
    )
    return init(jax.random.PRNGKey(int(config.seed)))


def abstract_state(config: Any, s: Setup) -> TrainState:
    """Shapes, dtypes and shardings of the state without computing it (for restoring)."""
    rep = distributed.replicated(s.mesh)
    shapes = jax.eval_shape(
        lambda rng: create_train_state(
            rng, s.model, s.tx, input_shape=(1,) + s.input_shape[1:], ema_rate=float(config.model.ema_rate)
        ),
        jax.random.PRNGKey(0),
    )
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes)


# --- data ----------------------------------------------------------------------------------------


def is_vector_data(config: Any) -> bool:
    """True for vector (non-image) datasets: the 2-D ``TOY_*`` mixtures, batches ``(B, D)``."""
    from scoresde_jax import data

    return str(config.data.dataset).upper() in data.TOY_DISTRIBUTIONS


def data_shape(config: Any) -> tuple[int, ...]:
    """Shape of one example: ``(H, W, C)`` for images, ``(D,)`` for vector (``TOY_*``) data."""
    from scoresde_jax import data

    d = config.data
    if is_vector_data(config):
        return (int(data.get_toy_distribution(str(d.dataset).upper()).dim),)
    return (int(d.image_size), int(d.image_size), int(d.num_channels))


def _data_scaler(config: Any) -> Callable[[np.ndarray], np.ndarray]:
    from scoresde_jax import data

    if is_vector_data(config):  # toy data are already in their natural units (no [0, 1] range)
        return lambda x: x
    return data.get_data_scaler(bool(config.data.centered))


def _inverse_scaler(config: Any) -> Callable[[Any], Any]:
    from scoresde_jax import data

    if is_vector_data(config):
        return lambda x: x
    return data.get_data_inverse_scaler(bool(config.data.centered))


def get_datasets(config: Any, *, data_dir: str | None = None) -> tuple[Iterator, Iterator]:
    """Per-process (train, eval) iterators of numpy batches; each host reads its own shard."""
    from scoresde_jax import data

    shard = (jax.process_index(), jax.process_count())
    kw = dict(seed=int(config.seed), shard=shard, data_dir=data_dir)
    return (
        data.get_dataset(config, split="train", **kw),
        data.get_dataset(config, split="test", num_epochs=None, **kw),
    )


def _iter_state(it: Any) -> Any:
    for name in ("get_state", "state"):
        fn = getattr(it, name, None)
        if callable(fn):
            return fn()
    return None


def _set_iter_state(it: Any, state: Any) -> None:
    if not state:
        return
    if jax.process_index() != 0:
        # Only process 0's state is in the checkpoint; the position (a function of the step) is shared,
        # the fingerprint names process 0's shard.
        state = {k: v for k, v in state.items() if k != "fingerprint"}
    fn = getattr(it, "set_state", None)
    if not callable(fn):
        raise ValueError(
            "The data iterator cannot restore its position (no set_state); a resumed run would not see the "
            "same data order. Use a checkpointable dataset from scoresde_jax.data."
        )
    fn(state)


def _images(batch: Any) -> np.ndarray:
    return np.asarray(batch["image"] if isinstance(batch, dict) else batch)


# --- sampling ------------------------------------------------------------------------------------


def make_sample_fn(config: Any, s: Setup, *, num_samples: int) -> Callable[[Any, jax.Array], jax.Array]:
    """Jitted ``(params, rng) -> samples`` in data space (images in ``[0, 1]``, toy vectors unclipped)
    with the config's sampler (``samplers.get_sampling_fn``: ``config.sampling.method`` 'pc', 'ode', 'ddim', ...). Compiles once."""
    from scoresde_jax.parameterization import get_score_fn
    from scoresde_jax.samplers import get_sampling_fn

    shape = (int(num_samples),) + tuple(s.input_shape[1:])
    continuous = _bool(config, "training", "continuous", True)
    inverse = _inverse_scaler(config)
    vector = is_vector_data(config)
    sampling_fn = get_sampling_fn(config, s.sde, shape, s.sampling_eps)

    def sample(params, rng):
        def model_fn(x, labels):
            return s.model.apply({"params": params}, x, labels, train=False)

        res = sampling_fn(rng, get_score_fn(s.sde, model_fn, continuous=continuous))
        if vector:
            return inverse(res.x)
        return jnp.clip(inverse(res.x), 0.0, 1.0)

    return jax.jit(sample, out_shardings=distributed.replicated(s.mesh))


# --- the loop ------------------------------------------------------------------------------------


class TrainResult(NamedTuple):
    state: TrainState
    step: int
    metrics: dict  # last logged scalars
    workdir: str


def _first_bad(losses: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(losses))
    return int(bad[0]) if bad.size else None


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, mininterval=1.0)


def train(
    config: Any,
    workdir: str,
    *,
    model: Any = None,
    datasets: tuple[Iterator, Iterator] | None = None,
    data_dir: str | None = None,
    mesh: jax.sharding.Mesh | None = None,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train (or resume) a score model as ``config`` says; write everything under ``workdir``.

    ``model``/``datasets`` replace ``create_model(config)`` / ``data.get_dataset(config, ...)`` (tests,
    custom data). ``stop_at`` ends the loop early at that step (a preemption), after saving.
    Raises :class:`NonFiniteLossError` when the loss becomes NaN/inf; the last good checkpoint stays.
    """
    t = config.training
    s = setup(config, model=model, mesh=mesh)
    main = distributed.is_main_process()
    workdir = os.path.abspath(workdir)
    n_iters = int(t.n_iters)
    n_jit = int(t.get("n_jitted_steps", 1))
    log_freq = int(t.get("log_freq", 50))
    eval_freq = int(t.get("eval_freq", 0))
    snapshot_freq = int(t.get("snapshot_freq", n_iters))
    preempt_freq = int(t.get("snapshot_freq_for_preemption", 0))
    accum = int(t.get("grad_accum_steps", 1))

    train_fn = make_train_fn(get_loss_fn(config, s, train=True), s.mesh, grad_accum_steps=accum)
    eval_fn = make_eval_fn(get_loss_fn(config, s, train=False), s.mesh) if eval_freq > 0 else None
    train_iter, eval_iter = datasets if datasets is not None else get_datasets(config, data_dir=data_dir)
    scaler = _data_scaler(config)

    ckpt = Checkpointer(workdir, max_to_keep=int(t.get("keep_checkpoints", 0)) or None)
    restored = ckpt.restore_latest(abstract_state(config, s))
    if restored is not None:
        state = restored.state
        _set_iter_state(train_iter, restored.data_state)
        log.info("Resumed from %s at step %d.", restored.directory, restored.step)
    else:
        state = init_state(config, s)
    step = int(distributed.to_host(state.step))
    local_bs = int(t.batch_size) // jax.process_count()

    writer = MetricWriter(workdir, active=main)
    sample_fn = None
    if bool(t.get("snapshot_sampling", False)):
        sample_fn = make_sample_fn(config, s, num_samples=int(t.get("snapshot_num_samples", 64)))
    if main:
        log.info(
            "Training %s on %d device(s) x %d process(es), global batch %d, %d steps. Workdir %s: "
            "checkpoints in %s and %s, metrics in %s (TensorBoard event files alongside), samples in %s.",
            type(s.model).__name__, s.mesh.devices.size, jax.process_count(), int(t.batch_size), n_iters,
            workdir, ckpt.snapshots.directory, ckpt.preemption.directory, writer.jsonl_path,
            os.path.join(workdir, "samples"),
        )
    bar = _progress(n_iters, step, progress and main)
    metrics: dict = {}
    end = n_iters if stop_at is None else min(n_iters, int(stop_at))
    t0 = time.perf_counter()
    try:
        while step < end:
            # Dispatches end on multiples of n_jitted_steps; the last one may be shorter (n_iters = 1300001
            # in the paper's configs), as may the first after resuming from an early stop: one more compile.
            k = min(n_jit - step % n_jit, end - step)
            chunk = [scaler(_images(next(train_iter))) for _ in range(k)]
            for x in chunk:
                if x.shape[0] != local_bs:
                    raise ValueError(
                        f"Data iterator gave a batch of {x.shape[0]} on this process; expected training.batch_size"
                        f" / process_count = {local_bs}."
                    )
            batches = distributed.global_batch(np.stack(chunk), s.mesh, leading=1)
            state, m = train_fn(state, batches)
            losses = distributed.to_host(m.loss)
            bad = _first_bad(losses)
            if bad is not None:
                ckpt.wait()
                last = ckpt.latest_step()
                msg = (
                    f"Training stopped: loss is {losses[bad]} at step {step + bad + 1}. The last good checkpoint "
                    + (f"is step {last} under {workdir}" if last is not None else "does not exist (none saved yet)")
                    + "; it was kept. Lower optim.lr, check optim.grad_clip and the data scaling, then resume."
                )
                log.error(msg)
                raise NonFiniteLossError(msg)
            step += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
                bar.set_postfix(loss=f"{float(losses[-1]):.4g}", refresh=False)
            if step % log_freq == 0 or step == end:
                norms = distributed.to_host(m.grad_norm)
                dt = time.perf_counter() - t0
                metrics = {"train/loss": float(losses[-1]), "train/grad_norm": float(norms[-1])}
                writer.write_scalars(step, metrics)
                if bar is None and main:
                    log.info("step %d: loss %.5g (%.1fs)", step, metrics["train/loss"], dt)
            if eval_fn is not None and step % eval_freq == 0:
                xb = distributed.global_batch(scaler(_images(next(eval_iter))), s.mesh)
                eval_loss = float(distributed.to_host(eval_fn(state, xb)))
                metrics["eval/loss"] = eval_loss
                writer.write_scalars(step, {"eval/loss": eval_loss})
            snapshot = step % snapshot_freq == 0 or step == n_iters
            if not snapshot and ((preempt_freq and step % preempt_freq == 0) or step == end):
                ckpt.save(step, state, _iter_state(train_iter), preemption=True)  # also when stopped early
            if snapshot:
                ckpt.save(step, state, _iter_state(train_iter))
                if sample_fn is not None:
                    path = _snapshot_samples(sample_fn, state, step, workdir, writer)
                    if main:
                        log.info("Step %d: samples written to %s", step, path)
        writer.flush()
    finally:
        if bar is not None:
            bar.close()
        ckpt.wait()
        ckpt.close()
        writer.close()
    if main:
        log.info("Training reached step %d; checkpoints under %s.", step, workdir)
    return TrainResult(state, step, metrics, workdir)


def _save_samples_png(samples: np.ndarray, path: str) -> None:
    """An image grid for images ``(N, H, W, C)``; a scatter plot for 2-D vectors ``(N, 2)``."""
    if samples.ndim == 2:
        _scatter_png(samples, path)
    else:
        save_image_grid(samples, path, scale=max(1, 64 // samples.shape[1]))


def _scatter_png(points: np.ndarray, path: str) -> None:
    if points.shape[1] != 2:
        log.warning("No PNG for %d-D vector samples (only 2-D is plotted); see the .npy file.", points.shape[1])
        return
    try:
        from experiments.toy2d import scatter_png
    except ImportError:  # the experiments package is not installed with scoresde_jax
        from PIL import Image, ImageDraw

        def scatter_png(panels, out, size=320, lim=3.5):
            img = Image.new("RGB", (size, size), "white")
            draw = ImageDraw.Draw(img)
            for pts in panels.values():
                uv = (np.asarray(pts, np.float64) + lim) / (2 * lim) * (size - 1)
                for u, v in uv:
                    draw.point((float(u), float(size - 1 - v)), fill=(30, 80, 200))
            out.parent.mkdir(parents=True, exist_ok=True)
            img.save(out)

    from pathlib import Path

    scatter_png({"samples": points}, Path(path), lim=3.5)  # the TOY_* mixtures lie within [-3, 3]^2


def _snapshot_samples(sample_fn, state: TrainState, step: int, workdir: str, writer: MetricWriter) -> str:
    images = distributed.to_host(sample_fn(state.ema_params, stream_key(state.rng, SAMPLE_STREAM, step)))
    path = os.path.join(workdir, "samples", f"iter_{step}", "sample.png")
    if distributed.is_main_process():
        _save_samples_png(images, path)
        np.save(os.path.join(os.path.dirname(path), "sample.npy"), images)
        if images.ndim == 4:
            writer.write_images(step, {"samples": images})
    return path


# --- sampling / evaluation from a workdir --------------------------------------------------------


def sample(
    config: Any,
    workdir: str,
    *,
    num_samples: int = 64,
    out: str | None = None,
    seed: int = 0,
    model: Any = None,
) -> tuple[np.ndarray, str]:
    """Sample ``num_samples`` images with the latest EMA parameters of ``workdir``; write a PNG grid
    (a scatter plot for 2-D toy data).

    Returns ``(images (N, H, W, C) in [0, 1], png_path)``; for ``TOY_*`` data ``(samples (N, D), png_path)``.
    """
    from scoresde_jax.checkpoint import restore_params

    s = setup(config, model=model)
    params, step = restore_params(workdir, abstract_state(config, s))
    sample_fn = make_sample_fn(config, s, num_samples=num_samples)
    images = distributed.to_host(sample_fn(params, jax.random.PRNGKey(seed)))
    out = out or os.path.join(os.path.abspath(workdir), "samples", f"final_{step}", "sample.png")
    if distributed.is_main_process():
        _save_samples_png(images, out)
        np.save(os.path.splitext(out)[0] + ".npy", images)
        log.info("Wrote %d samples of step %d to %s", num_samples, step, out)
    return images, out


def toy_metrics(dataset: str, samples: np.ndarray, *, seed: int = 0, n_projections: int = 256) -> dict:
    """Sliced Wasserstein distances (``analytic.sliced_wasserstein``) for a ``TOY_*`` dataset.

    ``swd``: samples vs as many exact target samples; ``swd_floor``: between two exact sets of that
    size (the sampling-noise floor); ``swd_prior``: N(0, I) samples vs the target (an untrained VP
    model's samples). All use the same projections.
    """
    from scoresde_jax import analytic, data

    mix = data.get_toy_distribution(str(dataset).upper())
    x = jnp.asarray(np.asarray(samples, np.float32).reshape(len(samples), -1))
    k_a, k_b, k_p, k_proj = jax.random.split(jax.random.PRNGKey(int(seed)), 4)
    n = x.shape[0]
    ref = analytic.sample_mixture(mix, k_a, n, dtype=x.dtype).reshape(n, -1)
    ref2 = analytic.sample_mixture(mix, k_b, n, dtype=x.dtype).reshape(n, -1)
    prior = jax.random.normal(k_p, x.shape, x.dtype)

    def swd(a, b):
        return float(analytic.sliced_wasserstein(a, b, k_proj, n_projections=n_projections))

    finite = bool(np.all(np.isfinite(np.asarray(x))))
    return {
        "swd": swd(x, ref) if finite else float("inf"),
        "swd_floor": swd(ref2, ref),
        "swd_prior": swd(prior, ref),
    }


def quality_metrics(config: Any, images: np.ndarray) -> dict:
    """Sample-quality metrics for the embedded datasets (``evaluation.digits_metrics`` for DIGITS,
    :func:`toy_metrics` (sliced Wasserstein distance to exact target samples) for ``TOY_*``)."""
    if is_vector_data(config):
        return toy_metrics(str(config.data.dataset), images, seed=int(config.seed))
    if str(config.data.dataset).upper() != "DIGITS":
        return {}
    from scoresde_jax import evaluation

    res = evaluation.digits_metrics(images, method=str(config.data.get("digits_resize", "bilinear")))
    return {k: float(v) for k, v in res.items()}


def train_and_evaluate(
    config: Any, workdir: str, *, num_samples: int | None = None, **train_kwargs
) -> dict:
    """Train, sample a PNG grid (2-D toy data: a scatter plot) with the EMA parameters and compute the
    quality metric; one entry point.

    Returns ``{'step', 'train': last train metrics, 'samples': png path, 'quality': metrics,
    'seconds': wall time}`` and writes it to ``<workdir>/eval/results.json``.
    """
    t0 = time.perf_counter()
    result = train(config, workdir, **train_kwargs)
    train_seconds = time.perf_counter() - t0
    n = int(num_samples or config.eval.get("num_samples", 64))
    images, png = sample(config, workdir, num_samples=n, seed=int(config.seed) + 1,
                         model=train_kwargs.get("model"))
    quality = quality_metrics(config, images)
    out = {
        "step": result.step,
        "train": result.metrics,
        "samples": png,
        "quality": quality,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - t0,
    }
    if distributed.is_main_process():
        path = os.path.join(os.path.abspath(workdir), "eval", "results.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=2)
        log.info("Results: %s (written to %s)", json.dumps(quality), path)
    return out


def likelihood(
    config: Any, workdir: str, *, num_batches: int | None = None, data_dir: str | None = None,
    model: Any = None, seed: int = 0,
) -> dict:
    """Mean bits/dim of the eval split under the latest EMA parameters (probability-flow ODE,
    Hutchinson divergence with ``config.eval``'s defaults). Returns ``{'bpd', 'num_examples', 'step'}``."""
    from scoresde_jax.checkpoint import restore_params
    from scoresde_jax.likelihood import get_likelihood_fn
    from scoresde_jax.parameterization import get_model_fn, get_score_fn

    s = setup(config, model=model)
    params, step = restore_params(workdir, abstract_state(config, s))
    continuous = _bool(config, "training", "continuous", True)
    lik = get_likelihood_fn(
        s.sde,
        lambda p: get_score_fn(s.sde, get_model_fn(s.model, p), continuous=continuous),
        centered=bool(config.data.centered),
        dequantize=bool(config.data.get("uniform_dequantization", False)),
    )
    from scoresde_jax import data

    it = data.get_dataset(config, split="test", seed=int(config.seed), data_dir=data_dir)
    scaler = _data_scaler(config)
    bpds = []
    for i, batch in enumerate(it):
        if num_batches is not None and i >= num_batches:
            break
        x = distributed.global_batch(scaler(_images(batch)), s.mesh)
        res = lik(params, x, jax.random.PRNGKey(seed + i))
        bpds.append(np.asarray(distributed.to_host(res.bpd)).reshape(-1))
    if not bpds:
        raise ValueError("The eval split gave no batch; lower eval.batch_size.")
    allb = np.concatenate(bpds)
    return {"bpd": float(allb.mean()), "num_examples": int(allb.size), "step": step}


def import_official_checkpoint(config: Any, checkpoint: str, workdir: str, *, model: Any = None) -> dict:
    """Convert an official score_sde checkpoint into an Orbax checkpoint of this library under ``workdir``.

    ``params`` and ``ema_params`` come from the official ``optimizer.target`` and ``params_ema``; the step
    is the official one; the optimizer state starts fresh (the official Adam moments are not carried over).
    """
    from scoresde_jax import convert

    s = setup(config, model=model)
    official = convert.read_official_checkpoint(checkpoint)
    ema = convert.load_official_checkpoint(checkpoint, config, ema=True)
    raw = convert.load_official_checkpoint(checkpoint, config, ema=False)
    params = distributed.put_replicated(raw, s.mesh)
    state = init_state(config, s).replace(
        step=distributed.put_replicated(np.int32(official.step), s.mesh),
        params=params,
        ema_params=distributed.put_replicated(ema, s.mesh),
        opt_state=jax.jit(s.tx.init, out_shardings=distributed.replicated(s.mesh))(params),
    )
    with Checkpointer(workdir, async_save=False) as ckpt:
        path = ckpt.save(int(official.step), state, {})
    log.info("Converted %s (step %d) into %s", official.path, official.step, path)
    return {"step": int(official.step), "checkpoint": path, "source": str(official.path)}
