"""Pretrained models: make and convert an official-format checkpoint, sample, bits/dim, inpaint, colorize.

Cells of ``02_pretrained_models.ipynb`` (written by ``build_notebooks.py``).
"""

from __future__ import annotations

NAME = "02_pretrained_models.ipynb"

CELLS = [
    ("md", """# Pretrained models: convert, sample, measure likelihood, inpaint and colorize

The official score_sde release is a set of Flax checkpoints (`checkpoint_<step>` msgpack files of its training
state). `scoresde_jax.pretrained.score_sde` reads them without TensorFlow or pickle and maps their parameters onto
this library's networks. For a published checkpoint, with the config it was trained with (from the shell, or in Python):

```bash
scoresde convert --config configs/ve/cifar10_ncsnpp_continuous.py \\
    --checkpoint exp/ve/cifar10_ncsnpp_continuous/checkpoint_24 --workdir runs/cifar10_ncsnpp
```
```python
from scoresde_jax.config import load_config, param_shapes
from scoresde_jax.pretrained import score_sde
config = load_config("configs/ve/cifar10_ncsnpp_continuous.py")
ckpt = score_sde.load_checkpoint("exp/ve/cifar10_ncsnpp_continuous/checkpoint_24", param_shapes(config))
params = ckpt.weights()   # the EMA parameters, what the paper evaluates
```

Nothing is downloaded here, so this notebook first *makes* a small checkpoint in exactly the official layout (a short
training run on 8x8 digits colored by their class, about 30 s), then uses it as one would use a downloaded one. The network is the
library's small MLP over the flattened 8x8x3 pixels, so that the notebook runs in about a minute on a CPU; with a
CIFAR-10 checkpoint the same cells run unchanged on `(B, 32, 32, 3)` images with `create_model(config)`."""),
    ("code", """import os, tempfile, time
from pathlib import Path
import flax.serialization
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from scoresde_jax import controllable, likelihood, losses, models, parameterization, samplers
from scoresde_jax.pretrained import score_sde
from scoresde_jax import sde as sde_lib
from scoresde_jax.data import load_digits_images
from scoresde_jax.metrics_io import image_grid
from scoresde_jax.training import create_train_state, make_optimizer, make_train_fn
from scoresde_jax.training.distributed import make_mesh

T0 = time.perf_counter()
COLORS = np.array([[1, .2, .2], [.2, 1, .2], [.3, .4, 1], [1, 1, .2], [1, .3, 1],
                   [.2, 1, 1], [1, .6, .2], [.6, .3, 1], [1, 1, 1], [.5, 1, .5]], np.float32)
def colored_digits(split):
    \"\"\"The embedded digits, digit k in COLORS[k] on black: (N, 8, 8, 3) in [-1, 1], and the labels.\"\"\"
    gray, labels = load_digits_images(split)
    return gray * COLORS[labels][:, None, None, :] * 2 - 1, labels
(train, _), (test, test_labels) = colored_digits("train"), colored_digits("test")
SHAPE = (8, 8, 3)

def show(rows, titles, *, nrow=8, size=3.0):
    fig, axes = plt.subplots(1, len(rows), figsize=(size * len(rows), size + 0.4), squeeze=False)
    for ax, x, title in zip(axes[0], rows, titles):
        x = np.clip((np.asarray(x).reshape((-1,) + SHAPE) + 1) / 2, 0, 1)
        ax.imshow(image_grid(x, nrow=nrow)); ax.set_title(title, fontsize=9); ax.axis("off")
    plt.show()
show([train[:64]], ["colored digits (training data)"])"""),
    ("md", """## Make an official-format checkpoint

A short run (continuous VP SDE, the library's loss and train step), then the state is written as score_sde's
`State` serializes: `step`, `optimizer{target, state{step, param_states}}`, `lr`, `model_state`, `ema_rate`,
`params_ema`, `rng` (as `tests/test_convert.py` does)."""),
    ("code", """sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=100)
model = models.MLP(hidden_sizes=(512, 512, 512), embedding_type="positional")
state = create_train_state(jax.random.key(0), model, make_optimizer(lr=2e-3, warmup=100),
                           input_shape=(1, 192), ema_rate=0.99)
step = make_train_fn(losses.get_loss_fn(sde, model, train=True), make_mesh())
flat = train.reshape(len(train), -1)
rng = np.random.default_rng(0)
for i in range(900):
    state, metrics = step(state, flat[rng.integers(0, len(flat), 128)][None])
print("trained 900 steps, loss", float(metrics.loss[0]))

workdir = Path(os.environ.get("NOTEBOOK_WORKDIR") or tempfile.mkdtemp())
params = jax.tree.map(np.asarray, state.params)
official = {"step": np.asarray(900),
            "optimizer": {"target": params, "state": {"step": np.asarray(900), "param_states": jax.tree.map(
                lambda p: {"grad_ema": np.zeros_like(p), "grad_sq_ema": np.zeros_like(p)}, params)}},
            "lr": np.asarray(2e-3, np.float32), "model_state": {}, "ema_rate": np.asarray(0.99, np.float32),
            "params_ema": jax.tree.map(np.asarray, state.ema_params), "rng": np.asarray([0, 42], np.uint32)}
ckpt_dir = workdir / "official" / "checkpoints"
ckpt_dir.mkdir(parents=True, exist_ok=True)
(ckpt_dir / "checkpoint_900").write_bytes(flax.serialization.msgpack_serialize(official))
print("wrote", ckpt_dir / "checkpoint_900")"""),
    ("md", """## Convert it

`score_sde.load_checkpoint(path, expected)` finds the newest `checkpoint_<step>` of a directory, reads it once and
maps its raw and EMA parameters onto `expected`, the network's parameter tree (shapes and dtypes: here `jax.eval_shape`
of the network's init, for a config's network `param_shapes(config)`). Every parameter's name and shape is checked (a
mismatch raises an error that lists what differs); `ckpt.weights()` is the EMA parameters."""),
    ("code", """expected = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 192)), jnp.zeros((1,))))["params"]
ckpt = score_sde.load_checkpoint(ckpt_dir, expected)
params = ckpt.weights()
print(f"step {ckpt.step}, EMA rate {ckpt.ema_rate}: {models.count_params(params):,} parameters from {ckpt.path.name}")

def image_score(params, x, t):          # the MLP sees flat vectors; the samplers see (B, 8, 8, 3) images
    model_fn = parameterization.get_model_fn(model, params)
    score = parameterization.get_score_fn(sde, model_fn, continuous=True)(x.reshape(x.shape[0], -1), t)
    return score.reshape(x.shape)
score_fn = jax.tree_util.Partial(image_score, params)"""),
    ("md", """## Sample: predictor-corrector and few-step solvers

The paper's PC sampler (reverse diffusion + Langevin, 100 levels, 200 evaluations), three few-step samplers of
the same score with 20-25 evaluations -- the reverse SDE with 25 Euler-Maruyama steps, EDM's stochastic sampler
(Heun steps, noise added at every step) and DPM-Solver++ (deterministic, on a grid uniform in log-SNR) -- and, for
reference, the adaptive solver of the probability-flow ODE at its tolerance (several times more evaluations).

A network trained for half a minute has large errors, and the samplers differ in how they treat them. The
stochastic ones forgive them: the noise added at every step pulls the state back toward the data, so PC with 200
and the reverse SDE with 25 evaluations draw digits (EDM's sampler, mostly deterministic Heun steps, is in
between). The deterministic solvers of the probability-flow ODE follow the network's errors to the end:
DPM-Solver++ with 20 evaluations and the adaptive solver with four to five times more agree with each other -- the
few-step solver is accurate, more steps do not help -- and both show the errors as colored noise. That is the
model, not the solver: trained 3.3 times longer (3000 steps) most ODE samples become digits, and with a
converted real checkpoint the ODE solvers are the fast choice."""),
    ("code", """key, shape = jax.random.key(1), (64, *SHAPE)
pc = samplers.pc_sample(score_fn, sde, shape, key, predictor="reverse_diffusion", corrector="langevin", snr=0.16)
em = samplers.pc_sample(score_fn, sde_lib.VPSDE(N=25), shape, key, predictor="euler_maruyama", corrector="none")
edm = samplers.edm_sample(score_fn, sde, shape, key, num_steps=11, S_churn=40.0)
fast = samplers.dpm_solver_pp_sample(score_fn, sde, shape, key, num_steps=20, grid="logsnr")
ode = samplers.ode_sample(score_fn, sde, shape, key, rtol=1e-3, atol=1e-3)
show([pc.x, em.x, edm.x, fast.x, ode.x],
     [f"PC (NFE {int(pc.nfe)})", f"reverse SDE, Euler-Maruyama (NFE {int(em.nfe)})",
      f"EDM stochastic (NFE {int(edm.nfe)})", f"DPM-Solver++ (NFE {int(fast.nfe)})",
      f"adaptive ODE (NFE {int(ode.nfe)})"], size=2.6)"""),
    ("md", """## Bits per dimension

The exact log-likelihood along the probability-flow ODE with a Hutchinson divergence estimate, reported in bits/dim
of 8-bit data (offset 7 for data in [-1, 1]), on held-out digits and on the same digits with their color
channels reversed (a digit in the wrong color: a shift the model should find less likely)."""),
    ("code", """x = jnp.asarray(test[:32])
shuffled = x[..., ::-1]
held_out = likelihood.bits_per_dim(score_fn, x, sde=sde, rng=jax.random.key(2), centered=True, rtol=1e-3, atol=1e-3)
shifted = likelihood.bits_per_dim(score_fn, shuffled, sde=sde, rng=jax.random.key(2), centered=True,
                                  rtol=1e-3, atol=1e-3)
print(f"held-out digits:   {float(held_out.bpd.mean()):.2f} bits/dim "
      f"(ODE evaluations up to {int(held_out.nfe.max())})")
print(f"channels reversed: {float(shifted.bpd.mean()):.2f} bits/dim")
fig, ax = plt.subplots(figsize=(5, 3))
ax.hist([np.asarray(held_out.bpd), np.asarray(shifted.bpd)], bins=12, label=["held-out", "channels reversed"])
ax.set_xlabel("bits/dim"); ax.legend(); plt.show()"""),
    ("md", """## Inpainting and colorization

Both are PC sampling with the known part replaced by a forward-perturbed copy after every step (paper, appendix I):
`pc_inpaint` keeps the pixels under a mask (here the left half), `pc_colorize` keeps the gray level (the first
coordinate of an orthogonal color basis) and lets the model choose the colors: here it has to recognize the digit
to find its color."""),
    ("code", """x = jnp.asarray(test[:16])
mask = jnp.zeros(SHAPE).at[:, :4, :].set(1.0)                  # the left half is known
inpainted = controllable.pc_inpaint(score_fn, sde, x, mask, jax.random.key(3), predictor="reverse_diffusion",
                                    corrector="langevin", snr=0.16)
show([x, x * mask - (1 - mask), inpainted.x], ["original", "known part (left half)", "inpainted"], nrow=4)

gray = jnp.mean(x, axis=-1, keepdims=True)
colorized = controllable.pc_colorize(score_fn, sde, gray, jax.random.key(4), predictor="reverse_diffusion",
                                     corrector="langevin", snr=0.16)
show([x, jnp.repeat(gray, 3, -1), colorized.x], ["original", "gray input", "colorized"], nrow=4)
print("gray level kept exactly:", float(jnp.max(jnp.abs(colorized.x.mean(-1, keepdims=True) - gray))) < 1e-4)
def hue(x):                                      # mean color of the bright pixels, as a unit vector
    x = (np.asarray(x) + 1) / 2
    c = (x * (x.mean(-1, keepdims=True) > 0.3)).sum((1, 2))
    return c / np.linalg.norm(c, axis=-1, keepdims=True)
nearest = np.argmax(hue(colorized.x) @ (COLORS / np.linalg.norm(COLORS, axis=-1, keepdims=True)).T, -1)
print(f"colorized in their class's color: {np.mean(nearest == test_labels[:16]):.0%} of 16")
print(f"notebook ran in {time.perf_counter() - T0:.0f} s ({time.process_time():.0f} s of CPU in this kernel)")"""),
]
