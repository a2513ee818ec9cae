"""Write the tutorial notebooks from the cell lists below (keeps them reviewable as code).

    python experiments/notebooks/build_notebooks.py

The notebooks are stored without outputs; ``tests/test_notebooks.py`` executes each in a fresh
kernel (small sizes: each runs in about a minute on 2 CPU cores) and checks that it draws images.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOUR = [
    ("md", """# A tour of scoresde_jax with exact scores

Gaussian-mixture data have a closed-form score under every SDE of the paper, so we can study the samplers and the
likelihood without training anything: any error you see is the sampler's, not the network's. Every figure below is
cheap to redo with other SDEs, samplers or targets: change a name and rerun the cell."""),
    ("code", """import functools, time
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from scoresde_jax import analytic, likelihood, samplers
from scoresde_jax import sde as sde_lib

T0 = time.perf_counter()
target = analytic.ring_mixture(n=8, radius=2.0, std=0.2)
SDES = {"VE": sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=100),
        "VP": sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=100),
        "sub-VP": sde_lib.subVPSDE(beta_min=0.1, beta_max=20.0, N=100)}
SCORES = {name: analytic.exact_score_fn(target, sde) for name, sde in SDES.items()}
n = 500
ref = analytic.sample_mixture(target, jax.random.key(0), n)
swd = lambda x: float(analytic.sliced_wasserstein(x, ref, jax.random.key(3)))"""),
    ("md", """## Samples of every sampler under every SDE

Rows: the forward SDE. Columns: predictor-corrector (reverse diffusion + Langevin, the paper's PC), the
probability-flow ODE with an adaptive solver, and 10 steps of DPM-Solver++.
The title gives the score evaluations (NFE) and the sliced Wasserstein distance to exact samples (grey)."""),
    ("code", """SAMPLERS = {
    "PC (RD + Langevin)": lambda s, sde, key: samplers.pc_sample(
        s, sde, (n, 2), key, predictor="reverse_diffusion", corrector="langevin", snr=0.16),
    "probability-flow ODE": lambda s, sde, key: samplers.ode_sample(s, sde, (n, 2), key, rtol=1e-4, atol=1e-4),
    "DPM-Solver++ 10 steps": lambda s, sde, key: samplers.dpm_solver_pp_sample(s, sde, (n, 2), key, num_steps=10),
}
fig, axes = plt.subplots(len(SDES), len(SAMPLERS), figsize=(3 * len(SAMPLERS), 3 * len(SDES)),
                         sharex=True, sharey=True)
for r, (sde_name, sde) in enumerate(SDES.items()):
    for c, (name, run) in enumerate(SAMPLERS.items()):
        res = run(SCORES[sde_name], sde, jax.random.key(10 * r + c))
        ax = axes[r, c]
        ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.8")
        ax.scatter(res.x[:, 0], res.x[:, 1], s=2, c="C0")
        ax.set_title(f"{sde_name}: {name}\\nNFE {int(res.nfe)}, SWD {swd(res.x):.3f}", fontsize=9)
        ax.set_xlim(-3.5, 3.5); ax.set_ylim(-3.5, 3.5); ax.set_aspect("equal")
fig.tight_layout()
plt.show()"""),
    ("md", """## Trajectories: the reverse SDE against the probability-flow ODE

A predictor is a pure function `predictor(score_fn, x, t, z, *, sde, probability_flow) -> (x, x_mean)`, so a
hand-written `lax.scan` over it records whole paths. From the same prior draws, the reverse SDE (noise at every
step) wanders, while the probability-flow ODE (`probability_flow=True`, no noise) moves each point deterministically
to the data; both end on the ring."""),
    ("code", """@functools.partial(jax.jit, static_argnames=("sde", "probability_flow"))
def trajectories(x0, key, *, sde, probability_flow):
    score_fn = analytic.exact_score_fn(target, sde)
    ts = jnp.linspace(sde.T, 1e-3, sde.N)
    def step(x, inputs):
        t, k = inputs
        z = jax.random.normal(k, x.shape)
        x, x_mean = samplers.euler_maruyama(score_fn, x, jnp.full((x.shape[0],), t), z, sde=sde,
                                            probability_flow=probability_flow)
        return x, x_mean
    _, path = jax.lax.scan(step, x0, (ts, jax.random.split(key, sde.N)))
    return jnp.concatenate([x0[None], path])                      # (N + 1, B, 2)

sde = SDES["VP"]
x0 = sde.prior_sampling(jax.random.key(4), (12, 2))
paths = {flow: np.asarray(trajectories(x0, jax.random.key(5), sde=sde, probability_flow=flow))
         for flow in (False, True)}
fig, axes = plt.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
for ax, flow in zip(axes, (False, True)):
    path = paths[flow]
    ax.scatter(ref[:, 0], ref[:, 1], s=2, c="0.85")
    for b in range(path.shape[1]):
        ax.plot(path[:, b, 0], path[:, b, 1], lw=0.8)
    ax.scatter(path[0, :, 0], path[0, :, 1], marker="x", c="k", label="start (prior)")
    ax.scatter(path[-1, :, 0], path[-1, :, 1], marker="o", c="r", s=15, label="end")
    ax.set_title("probability-flow ODE" if flow else "reverse-time SDE (Euler-Maruyama)")
    ax.set_aspect("equal"); ax.legend(loc="lower right")
plt.show()

fig, ax = plt.subplots(figsize=(8, 3))
ts = np.linspace(1.0, 1e-3, sde.N + 1)
for flow, style in ((False, "-"), (True, "--")):
    path = paths[flow]
    for b in range(4):
        ax.plot(ts, path[:, b, 0], style, color=f"C{b}", lw=1)
ax.invert_xaxis(); ax.set_xlabel("t (from T to 0)"); ax.set_ylabel("first coordinate")
ax.set_title("x_1(t): reverse SDE (solid) and probability-flow ODE (dashed) from the same start")
plt.show()"""),
    ("md", """## Quality against the number of score evaluations

For each sampler we vary its step count and plot the sliced Wasserstein distance to exact samples against the
score evaluations it spent (VP SDE). Few-step solvers of the probability-flow ODE (DDIM, DPM-Solver++) reach
the quality of hundreds of PC steps in tens of evaluations. The floor is the distance between two exact sample
sets of this size."""),
    ("code", """score_vp, m = SCORES["VP"], 4000                 # more samples: the distance of two sets shrinks as 1/sqrt(m)
ref_m = analytic.sample_mixture(target, jax.random.key(8), m)
swd_m = lambda x: float(analytic.sliced_wasserstein(x, ref_m, jax.random.key(3)))
curves = {"PC (Euler-Maruyama)": [], "DDIM": [], "DPM-Solver++": []}
for steps in (5, 10, 20):
    for name, fn in (("DDIM", samplers.ddim_sample), ("DPM-Solver++", samplers.dpm_solver_pp_sample)):
        r = fn(score_vp, SDES["VP"], (m, 2), jax.random.key(6), num_steps=steps)
        curves[name].append((int(r.nfe), swd_m(r.x)))
for N in (25, 50, 100, 200):
    r = samplers.pc_sample(score_vp, sde_lib.VPSDE(N=N), (m, 2), jax.random.key(6),
                           predictor="euler_maruyama", corrector="none")
    curves["PC (Euler-Maruyama)"].append((int(r.nfe), swd_m(r.x)))
floor = swd_m(analytic.sample_mixture(target, jax.random.key(7), m))
fig, ax = plt.subplots(figsize=(6, 4))
for name, pts in curves.items():
    ax.plot(*zip(*pts), "o-", label=name)
ax.axhline(floor, color="k", ls=":", label="two exact sample sets")
ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("score evaluations (NFE)")
ax.set_ylabel("sliced Wasserstein distance"); ax.legend(); ax.set_title("VP SDE, exact score")
plt.show()"""),
    ("md", """## Exact likelihood along the probability-flow ODE

For data with a known density the ODE log-likelihood must equal the closed form (of the marginal at `eps`); the
scatter of one against the other lies on the diagonal."""),
    ("code", """sde = SDES["VP"]
x = ref[:64]
res = likelihood.log_likelihood(SCORES["VP"], x, sde=sde, rng=jax.random.key(5), divergence="exact")
exact = analytic.marginal_logp(target, sde, x, jnp.full((64,), 1e-5))
print("max |ODE logp - closed form|:", float(jnp.max(jnp.abs(res.logp - exact))), " nfe:", np.asarray(res.nfe).max())
fig, ax = plt.subplots(figsize=(4, 4))
ax.scatter(exact, res.logp, s=8)
lims = [float(exact.min()) - 0.2, float(exact.max()) + 0.2]
ax.plot(lims, lims, "k:", lw=1); ax.set_xlabel("closed-form log p"); ax.set_ylabel("ODE log p")
plt.show()"""),
    ("md", """## Controllable generation: inpainting a correlated Gaussian

Known coordinates are replaced by a forward-perturbed copy at every step (the paper's appendix I). This replacement
is an approximation of the conditional reverse SDE: with strongly correlated coordinates the predictor alone is
biased, and Langevin corrector steps (more of them, or a larger snr) pull the samples toward the exact Gaussian
conditional (Schur complement, the black cross)."""),
    ("code", """from scoresde_jax import controllable
cov = jnp.array([[1.0, 0.8, 0.3, 0.0], [0.8, 1.0, 0.5, 0.2], [0.3, 0.5, 1.0, 0.6], [0.0, 0.2, 0.6, 1.0]])
gauss = analytic.gaussian(jnp.zeros(4), cov)
sde_ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=100)
data = jnp.tile(jnp.array([[1.0, -1.0, 0.0, 0.0]]), (500, 1))
mask = jnp.tile(jnp.array([[1.0, 1.0, 0.0, 0.0]]), (500, 1))
s11, s21 = cov[:2, :2], cov[2:, :2]
cond_mean = np.asarray(s21 @ jnp.linalg.solve(s11, jnp.array([1.0, -1.0])))
print("exact conditional mean:", cond_mean)
fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
for ax, (corrector, n_steps) in zip(axes, (("none", 1), ("langevin", 3))):
    out = controllable.pc_inpaint(analytic.exact_score_fn(gauss, sde_ve), sde_ve, data, mask, jax.random.key(6),
                                  predictor="reverse_diffusion", corrector=corrector, n_steps=n_steps)
    m = np.asarray(out.x[:, 2:].mean(0))
    print(f"{corrector:>8s} x{n_steps}: sample mean of the unknown part", m)
    ax.scatter(out.x[:, 2], out.x[:, 3], s=2, alpha=0.5)
    ax.scatter(*cond_mean, marker="+", s=200, c="k", label="exact conditional mean")
    ax.scatter(*m, marker="x", s=100, c="r", label="sample mean")
    ax.set_title(f"corrector {corrector} x{n_steps}"); ax.set_xlabel("x_3"); ax.set_ylabel("x_4"); ax.legend()
plt.show()
print(f"notebook ran in {time.perf_counter() - T0:.0f} s ({time.process_time():.0f} s of CPU in this kernel)")"""),
]

TRAIN = [
    ("md", """# Train your own score model, then extend the library

A short run on the embedded 8x8 digits (scikit-learn's, nothing is downloaded): we build the pieces of a training
job by hand -- SDE, network, denoising score-matching loss, optax chain, jitted step -- watch the loss and the sample
grids improve, and then plug two things of our own into the samplers: a new SDE and a new predictor.

To keep this notebook at about a minute on a laptop CPU the network is the library's small time-conditioned MLP on
the flattened 64 pixels; `configs/digits_ddpmpp.py` trains the paper's DDPM++ U-Net on the same data
(`python3 dev.py main`, about 10 minutes) with exactly the same loss, state and step functions."""),
    ("code", """import dataclasses, math, time
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from scoresde_jax import losses, models, parameterization, samplers
from scoresde_jax import sde as sde_lib
from scoresde_jax.data import load_digits_images, scaler, inverse_scaler
from scoresde_jax.metrics_io import image_grid
from scoresde_jax.training import create_train_state, make_optimizer, make_train_fn
from scoresde_jax.training.distributed import make_mesh

T0 = time.perf_counter()
images, labels = load_digits_images("train")                 # (1437, 8, 8, 1) in [0, 1]
data = np.asarray(scaler(True)(images)).reshape(len(images), -1)   # [-1, 1], flattened to 64
to_images = lambda x: np.clip(np.asarray(inverse_scaler(True)(x)), 0, 1).reshape(-1, 8, 8, 1)

def show(grids, titles, *, size=3.0):
    fig, axes = plt.subplots(1, len(grids), figsize=(size * len(grids), size + 0.4), squeeze=False)
    for ax, g, title in zip(axes[0], grids, titles):
        ax.imshow(image_grid(to_images(g), nrow=6)[..., 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9); ax.axis("off")
    plt.show()

show([data[:36]], ["training digits"])"""),
    ("md", """## The training job, piece by piece

Continuous VP SDE (DDPM++'s), the denoising score-matching loss of `scoresde_jax.losses` (the network is called
with the label `(N - 1) t` and predicts the noise; `parameterization` turns its output into a score), the paper's
optax chain (clip, Adam with warmup), a `TrainState` with EMA parameters and one jitted step over the device mesh."""),
    ("code", """sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=500)          # N: levels of the PC sampler
model = models.MLP(hidden_sizes=(256, 256, 256), embedding_type="positional")
loss_fn = losses.get_loss_fn(sde, model, train=True, continuous=True)
tx = make_optimizer(lr=2e-3, warmup=100, grad_clip=1.0)
state = create_train_state(jax.random.key(0), model, tx, input_shape=(1, 64), ema_rate=0.99)
train_step = make_train_fn(loss_fn, make_mesh())
print(f"{models.count_params(state.params):,} parameters")

def param_score_fn(params, x, t):                  # (params, x, t) -> score: the samplers' pytree form
    model_fn = parameterization.get_model_fn(model, params)
    return parameterization.get_score_fn(sde, model_fn, continuous=True)(x, t)

# compiled once; called with new EMA parameters after every round
sampler = samplers.get_pc_sampler(sde, (36, 64), param_score_fn, predictor="euler_maruyama", corrector="none")"""),
    ("code", """rng = np.random.default_rng(0)
batch_size, rounds, steps_per_round = 128, 4, 250
history, grids = [], []
for r in range(rounds):
    for _ in range(steps_per_round):
        batch = data[rng.integers(0, len(data), batch_size)][None]      # (n_jitted_steps=1, B, 64)
        state, metrics = train_step(state, batch)
        history.append(float(metrics.loss[0]))
    grids.append(sampler(state.ema_params, jax.random.key(1)).x)    # same noise every round
    print(f"step {int(state.step):4d}  loss {np.mean(history[-50:]):.2f}")

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(history, lw=0.5, alpha=0.5, label="per step")
ax.plot(np.convolve(history, np.ones(25) / 25, mode="valid"), label="running mean (25)")
ax.set_xlabel("step"); ax.set_ylabel("DSM loss"); ax.set_yscale("log"); ax.legend()
plt.show()
show(grids, [f"EMA samples after {(r + 1) * steps_per_round} steps" for r in range(rounds)])"""),
    ("md", """## A custom SDE

An SDE is a frozen dataclass implementing `scoresde_jax.sde.SDE`: the scalar functions `a(t)` (`mean_coeff`),
`s(t)` (`marginal_std`), `g(t)` (`diffusion_coeff`), the linear drift coefficient and the prior. Here: a VP SDE with
a *constant* noise rate, `dx = -beta x / 2 dt + sqrt(beta) dw`, so `a(t) = exp(-beta t / 2)`, `s = sqrt(1 - a^2)`.

Our network was trained for the linear schedule, but the score of a VP-type SDE depends on time only through
`a(t)` (its marginals are `N(a x_0, (1 - a^2) I)`), so it serves any VP schedule after a change of time: solve
`a_linear(t') = a_constant(t)` for `t'`, a quadratic. With `beta = 10.05` both schedules end at the same `a(1)`, and
every sampler of the library runs on the new SDE unchanged."""),
    ("code", """@dataclasses.dataclass(frozen=True)
class ConstantVPSDE(sde_lib.SDE):
    \"\"\"dx = -beta x / 2 dt + sqrt(beta) dw: a(t) = exp(-beta t / 2), s(t) = sqrt(1 - a(t)^2), prior N(0, I).\"\"\"
    beta: float = 10.05
    N: int = 500
    T: float = 1.0
    kind = "vp"

    def mean_coeff(self, t):
        return jnp.exp(-0.5 * self.beta * t)
    def marginal_std(self, t):
        return jnp.sqrt(-jnp.expm1(-self.beta * t))
    def diffusion_coeff(self, t):
        return jnp.full_like(t, math.sqrt(self.beta))
    def drift_coeff(self, t):
        return jnp.full_like(t, -0.5 * self.beta)
    @property
    def prior_std(self):
        return 1.0

const = ConstantVPSDE()
db, bmin = sde.beta_max - sde.beta_min, sde.beta_min
def linear_time(t):          # a_linear(t') = a_constant(t):  db t'^2 / 4 + bmin t' / 2 = beta t / 2
    return (-bmin + jnp.sqrt(bmin**2 + 2 * db * const.beta * t)) / db

def const_score_fn(params, x, t):
    return param_score_fn(params, x, linear_time(t))

t = jnp.linspace(0.01, 1.0, 5)
print("a(t) constant:", np.round(const.mean_coeff(t), 4), "\\na(t') linear: ", np.round(sde.mean_coeff(linear_time(t)), 4))
score = jax.tree_util.Partial(const_score_fn, state.ema_params)
pc_const = samplers.pc_sample(score, const, (36, 64), jax.random.key(2), predictor="euler_maruyama", corrector="none")
ode_const = samplers.ode_sample(score, const, (36, 64), jax.random.key(2), rtol=1e-3, atol=1e-3)
show([grids[-1], pc_const.x, ode_const.x], ["linear VP, Euler-Maruyama", "constant-rate VP, Euler-Maruyama",
                                            f"constant-rate VP, ODE (NFE {int(ode_const.nfe)})"])"""),
    ("md", """## A custom predictor

A predictor is any function `predictor(score_fn, x, t, z, *, sde, probability_flow) -> (x, x_mean)` (an optional
`nfe` attribute counts its score evaluations); `pc_sample` takes it in place of a name, and the corrector too.
Here: Heun's method (the trapezoidal rule) on the drift of the reverse SDE, two evaluations per step. With
`probability_flow=True` it is a second-order solver of the probability-flow ODE: 25 Heun steps against 50 Euler
steps, the same 50 evaluations. (With a network this small and this briefly trained, the network's error, not the
solver's, sets the quality: train longer, or use `configs/digits_ddpmpp.py`, to see solvers differ.)"""),
    ("code", """def heun_predictor(score_fn, x, t, z, *, sde, probability_flow=False):
    \"\"\"x_mean = x - (d(x, t) + d(x_e, t - dt)) dt / 2, x_e = x - d(x, t) dt; x = x_mean + g sqrt(dt) z.\"\"\"
    dt = sde.T / sde.N
    reverse = sde.reverse(score_fn, probability_flow)
    d1, g = reverse.sde(x, t)
    d2, _ = reverse.sde(x - d1 * dt, jnp.maximum(t - dt, 1e-3))
    x_mean = x - 0.5 * (d1 + d2) * dt
    return x_mean + g[:, None] * math.sqrt(dt) * z, x_mean
heun_predictor.nfe = 2

score = jax.tree_util.Partial(param_score_fn, state.ema_params)
short = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=25)      # 25 levels x 2 evaluations
long = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=50)       # 50 levels x 1 evaluation
heun = samplers.pc_sample(score, short, (36, 64), jax.random.key(3), predictor=heun_predictor,
                          corrector="none", probability_flow=True)
euler = samplers.pc_sample(score, long, (36, 64), jax.random.key(3), predictor="euler_maruyama",
                           corrector="none", probability_flow=True)
show([euler.x, heun.x], [f"Euler, probability flow (NFE {int(euler.nfe)})",
                         f"our Heun predictor (NFE {int(heun.nfe)})"])
print(f"notebook ran in {time.perf_counter() - T0:.0f} s ({time.process_time():.0f} s of CPU in this kernel)")"""),
]
PRETRAINED = [
    ("md", """# Pretrained models: convert, sample, measure likelihood, inpaint and colorize

The official score_sde release is a set of Flax checkpoints (`checkpoint_<step>` msgpack files of its training
state). `scoresde_jax.convert` reads them without TensorFlow or pickle and maps their parameters onto this library's
networks. For a published checkpoint, with the config it was trained with (from the shell, or in Python):

```bash
scoresde convert --config configs/ve/cifar10_ncsnpp_continuous.py \\
    --checkpoint exp/ve/cifar10_ncsnpp_continuous/checkpoint_24 --workdir runs/cifar10_ncsnpp
```
```python
from scoresde_jax import convert
from scoresde_jax.config import load_config
config = load_config("configs/ve/cifar10_ncsnpp_continuous.py")
params = convert.load_official_checkpoint("exp/ve/cifar10_ncsnpp_continuous/checkpoint_24", config)
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
from scoresde_jax import controllable, convert, likelihood, losses, models, parameterization, samplers
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
for i in range(1200):
    state, metrics = step(state, flat[rng.integers(0, len(flat), 128)][None])
print("trained 1200 steps, loss", float(metrics.loss[0]))

workdir = Path(os.environ.get("NOTEBOOK_WORKDIR") or tempfile.mkdtemp())
params = jax.tree.map(np.asarray, state.params)
official = {"step": np.asarray(1200),
            "optimizer": {"target": params, "state": {"step": np.asarray(1200), "param_states": jax.tree.map(
                lambda p: {"grad_ema": np.zeros_like(p), "grad_sq_ema": np.zeros_like(p)}, params)}},
            "lr": np.asarray(2e-3, np.float32), "model_state": {}, "ema_rate": np.asarray(0.99, np.float32),
            "params_ema": jax.tree.map(np.asarray, state.ema_params), "rng": np.asarray([0, 42], np.uint32)}
ckpt_dir = workdir / "official" / "checkpoints"
ckpt_dir.mkdir(parents=True, exist_ok=True)
(ckpt_dir / "checkpoint_1200").write_bytes(flax.serialization.msgpack_serialize(official))
print("wrote", ckpt_dir / "checkpoint_1200")"""),
    ("md", """## Convert it

`read_official_checkpoint` finds the newest `checkpoint_<step>` of a directory and reads it;
`convert_official_params` checks every parameter's name and shape against the network and returns this library's
parameter tree (a mismatch raises an error that lists what differs). `load_official_checkpoint(path, config)` is the
same with the model built from a config."""),
    ("code", """ckpt = convert.read_official_checkpoint(ckpt_dir)
params = convert.convert_official_params(ckpt.params_ema, model, (192,))
print(f"step {ckpt.step}, EMA rate {ckpt.ema_rate}: {models.count_params(params):,} parameters from {ckpt.path.name}")

def image_score(params, x, t):          # the MLP sees flat vectors; the samplers see (B, 8, 8, 3) images
    model_fn = parameterization.get_model_fn(model, params)
    score = parameterization.get_score_fn(sde, model_fn, continuous=True)(x.reshape(x.shape[0], -1), t)
    return score.reshape(x.shape)
score_fn = jax.tree_util.Partial(image_score, params)"""),
    ("md", """## Sample: predictor-corrector and a few-step solver

The paper's PC sampler (reverse diffusion + Langevin, 100 levels, 200 evaluations) and DPM-Solver++ with 20
evaluations of the same score (on a grid uniform in log-SNR). A network trained for half a minute has large errors:
the Langevin corrector steps of PC partly correct them, while a deterministic few-step solver of the
probability-flow ODE shows them as noise; train longer (or convert a real checkpoint) and the two agree."""),
    ("code", """pc = samplers.pc_sample(score_fn, sde, (64, *SHAPE), jax.random.key(1), predictor="reverse_diffusion",
                        corrector="langevin", snr=0.16)
fast = samplers.dpm_solver_pp_sample(score_fn, sde, (64, *SHAPE), jax.random.key(1), num_steps=20, grid="logsnr")
show([pc.x, fast.x], [f"PC (NFE {int(pc.nfe)})", f"DPM-Solver++ (NFE {int(fast.nfe)})"])"""),
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
CONDITIONAL = [
    ("md", """# Conditional generation: classifier-free guidance and classifier guidance

Two ways to sample digits of a chosen class from a score model (`scoresde_jax.guidance`):

* **classifier-free guidance** (Ho & Salimans 2022): one network learns the conditional score `s(x, t, y)` and,
  with label dropout to a *null class*, the unconditional one; sampling uses
  `(1 + w) s(x, t, y) - w s(x, t, null)`;
* **classifier guidance** (Song et al. 2021, section 5; Dhariwal & Nichol 2021): an unconditional score plus
  `scale * grad_x log p_t(y | x)` of a *noise-conditional* classifier trained on perturbed data.

Both guided scores are plain score functions, so every sampler takes them. To run in about a minute on a CPU the
networks are small MLPs over the flattened 8x8 digits (`models.MLP(num_classes=...)`); the same calls serve a
class-conditional U-Net (`config.model.num_classes`)."""),
    ("code", """import time
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
import matplotlib.pyplot as plt
from scoresde_jax import guidance, losses, models, samplers
from scoresde_jax import sde as sde_lib
from scoresde_jax.data import load_digits_images, scaler, inverse_scaler
from scoresde_jax.evaluation.digits import digits_feature_extractor
from scoresde_jax.metrics_io import image_grid
from scoresde_jax.training import create_train_state, make_optimizer, make_train_fn
from scoresde_jax.training.distributed import make_mesh

T0 = time.perf_counter()
images, labels = load_digits_images("train")
data = np.asarray(scaler(True)(images)).reshape(len(images), -1)     # (1437, 64) in [-1, 1]
labels = np.asarray(labels, np.int32)
to_images = lambda x: np.clip(np.asarray(inverse_scaler(True)(x)), 0, 1).reshape(-1, 8, 8, 1)
sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=100)
mesh, rng = make_mesh(), np.random.default_rng(0)

def train(loss_fn, model, steps, lr=2e-3):
    state = create_train_state(jax.random.key(0), model, make_optimizer(lr=lr, warmup=100),
                               input_shape=(1, 64), ema_rate=0.99)
    step = make_train_fn(loss_fn, mesh)
    for _ in range(steps):
        idx = rng.integers(0, len(data), 128)
        state, metrics = step(state, {"image": data[idx][None], "label": labels[idx][None]})
    print(f"{type(model).__name__}: {steps} steps, final loss {float(metrics.loss[0]):.3f}")
    return state.ema_params

def show_per_class(x, title, per_class=6):
    \"\"\"x: (10 * per_class, 64), class k in rows k * per_class ... -> one column per class.\"\"\"
    x = to_images(x).reshape(10, per_class, 8, 8, 1).transpose(1, 0, 2, 3, 4).reshape(-1, 8, 8, 1)
    plt.figure(figsize=(5, 3.4)); plt.imshow(image_grid(x, nrow=10)[..., 0], cmap="gray")
    plt.title(title, fontsize=9); plt.axis("off"); plt.show()"""),
    ("md", """## A class-conditional score network with label dropout

`class_dropout=0.15` replaces a label by the null class (index `num_classes`) for 15% of the training examples,
so the same network gives the unconditional score at `y = null`. The loss is the usual one: a conditional network
gets `batch['label']`."""),
    ("code", """cond_model = models.MLP(hidden_sizes=(256, 256, 256), num_classes=10, class_dropout=0.15)
cond_params = train(losses.get_loss_fn(sde, cond_model, train=True), cond_model, 1000)
label_score = guidance.model_label_score_fn(sde, cond_model, cond_params)      # (x, t, y) -> score
null = guidance.null_label(cond_model)
y = jnp.repeat(jnp.arange(10), 6)                                                # 6 samples per class
for w in (0.0, 2.0):
    score = guidance.classifier_free_guidance(label_score, y, w, null=null)
    out = samplers.pc_sample(score, sde, (60, 64), jax.random.key(1), predictor="euler_maruyama", corrector="none")
    show_per_class(out.x, f"classifier-free guidance, w = {w:g} (columns: classes 0-9)")"""),
    ("md", """## Classifier guidance with a noise-conditional classifier

The classifier sees perturbed data `x_t` and the network label of `t` (`losses.get_classifier_loss_fn`); any flax
module `(x, labels) -> logits` will do, here a small MLP. The unconditional score is the null class of the network
above."""),
    ("code", """class NoisyDigitClassifier(nn.Module):
    \"\"\"(x (B, 64), time labels (B,)) -> logits (B, 10).\"\"\"
    @nn.compact
    def __call__(self, x, labels, train=False):
        h = jnp.concatenate([x, models.layers.get_timestep_embedding(labels, 32)], -1)
        for width in (256, 256):
            h = nn.swish(nn.Dense(width)(h))
        return nn.Dense(10)(h)

classifier = NoisyDigitClassifier()
clf_params = train(losses.get_classifier_loss_fn(sde, classifier, train=True), classifier, 800)
classifier_fn = guidance.model_classifier_fn(sde, classifier, clf_params)       # (x, t) -> logits
uncond = guidance.label_score(label_score, null)
for scale in (1.0, 4.0):
    score = guidance.classifier_guidance(uncond, classifier_fn, y, scale)
    out = samplers.pc_sample(score, sde, (60, 64), jax.random.key(1), predictor="euler_maruyama", corrector="none")
    show_per_class(out.x, f"classifier guidance, scale = {scale:g} (columns: classes 0-9)")"""),
    ("md", """## Accuracy against the guidance scale

An independent judge -- the digits classifier of `scoresde_jax.evaluation` (trained on real digits, about 98%
test accuracy) -- labels 200 samples per setting; accuracy is the fraction that shows the requested class. Labels and
scales are data of the guided score, so each method compiles once for all settings. Guidance trades diversity for
accuracy: stronger guidance gives more recognizable, more uniform digits."""),
    ("code", """judge = digits_feature_extractor()
y = jnp.arange(200) % 10
def accuracy(score):
    x = samplers.pc_sample(score, sde, (200, 64), jax.random.key(2), predictor="euler_maruyama", corrector="none").x
    _, logits = judge(to_images(x))
    return float(np.mean(np.argmax(logits, -1) == np.asarray(y)))

cfg_w, clf_scales = (0.0, 0.5, 1.0, 2.0, 4.0), (0.0, 1.0, 2.0, 4.0, 8.0)
cfg_acc = [accuracy(guidance.classifier_free_guidance(label_score, y, w, null=null)) for w in cfg_w]
clf_acc = [accuracy(guidance.classifier_guidance(uncond, classifier_fn, y, s)) for s in clf_scales]
base = accuracy(guidance.classifier_guidance(uncond, classifier_fn, y, 0.0))   # unconditional: chance
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(cfg_w, cfg_acc, "o-", label="classifier-free guidance, w")
ax.plot(clf_scales, clf_acc, "s-", label="classifier guidance, scale")
ax.axhline(base, color="k", ls=":", label="unconditional samples")
ax.set_xlabel("guidance strength (w or scale)"); ax.set_ylabel("judge accuracy"); ax.set_ylim(0, 1.02); ax.legend()
plt.show()
print("classifier-free guidance, accuracy by w:  ", dict(zip(cfg_w, np.round(cfg_acc, 3).tolist())))
print("classifier guidance, accuracy by scale:   ", dict(zip(clf_scales, np.round(clf_acc, 3).tolist())))
print(f"notebook ran in {time.perf_counter() - T0:.0f} s ({time.process_time():.0f} s of CPU in this kernel)")"""),
]

NOTEBOOKS = {
    "01_tour_exact_scores.ipynb": TOUR,
    "02_pretrained_models.ipynb": PRETRAINED,
    "03_train_your_own.ipynb": TRAIN,
    "04_conditional_generation.ipynb": CONDITIONAL,
}


def to_ipynb(cells) -> dict:
    out = []
    for kind, src in cells:
        lines = src.splitlines(keepends=True)
        if kind == "md":
            out.append({"cell_type": "markdown", "id": f"cell-{len(out)}", "metadata": {},
                        "source": lines})
        else:
            out.append({"cell_type": "code", "id": f"cell-{len(out)}", "metadata": {},
                        "execution_count": None, "outputs": [], "source": lines})
    return {"cells": out, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                      "name": "python3"},
                                       "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        (HERE / name).write_text(json.dumps(to_ipynb(cells), indent=1) + "\n")
        print("wrote", HERE / name)


if __name__ == "__main__":
    main()
