"""Train your own: a short digits run in the notebook, then a custom SDE and a custom predictor.

Cells of ``03_train_your_own.ipynb`` (written by ``build_notebooks.py``).
"""

from __future__ import annotations

NAME = "03_train_your_own.ipynb"

CELLS = [
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
