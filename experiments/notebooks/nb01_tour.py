"""The exact-score tour: samplers and SDEs on a 2-D mixture whose score is known in closed form.

Cells of ``01_tour_exact_scores.ipynb`` (written by ``build_notebooks.py``).
"""

from __future__ import annotations

NAME = "01_tour_exact_scores.ipynb"

CELLS = [
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
    ("md", """## Watching a sampler step by step: the `callback`

Every sampler except the adaptive ODE takes `callback`, called on the host at each step with a dict (k-diffusion's
convention): the step `i`, the time `t`, the state `x` and the sampler's prediction of the data `denoised`
(Tweedie's `E[x_0 | x_t]`). It runs inside the jitted loop through `jax.debug.callback`; without it the compiled
sampler is unchanged. Here UniPC with 10 evaluations on the VP SDE: the state (top) goes from the prior to the
ring, while the prediction (bottom) starts at the mixture's mean, spreads out to the ring and splits into the
eight modes only over the last steps, where the noise is small enough to tell them apart."""),
    ("code", """frames = []
res = samplers.sample(SCORES["VP"], SDES["VP"], (n, 2), jax.random.key(11), method="unipc", nfe=10,
                      callback=frames.append)
print(len(frames), "steps; times", np.round([float(f["t"]) for f in frames], 3))
fig, axes = plt.subplots(2, len(frames) + 1, figsize=(1.4 * (len(frames) + 1), 3), sharex=True, sharey=True)
for c, f in enumerate(frames + [{"i": "end", "t": 0.0, "x": res.x, "denoised": res.x}]):
    for r, key in enumerate(("x", "denoised")):
        ax = axes[r, c]
        ax.scatter(ref[:, 0], ref[:, 1], s=1, c="0.85")
        ax.scatter(f[key][:, 0], f[key][:, 1], s=1, c="C1" if r else "C0")
        ax.set_xlim(-3.5, 3.5); ax.set_ylim(-3.5, 3.5); ax.set_xticks([]); ax.set_yticks([])
    axes[0, c].set_title(f"i={f['i']}\\nt={float(f['t']):.3f}", fontsize=8)
axes[0, 0].set_ylabel("state x"); axes[1, 0].set_ylabel("denoised")
fig.tight_layout()
plt.show()"""),
    ("md", """## Quality against the number of score evaluations

For each sampler we vary its step count and plot the sliced Wasserstein distance (SWD) to exact samples against
the score evaluations it spent (VP SDE). Two *exact* sample sets are not at distance zero: with separated modes
the SWD of finite sets is dominated by how many points land in each mode, and it shrinks only slowly with the
set size (about `m^(-1/4)`). So that the curves are not noise, every point is 4 independent sets of `m = 4000`
samples (marker: their mean, bar: their range), and the grey band is the *floor*: the range of the SWD between
8 pairs of exact sets of the same size. A point inside the band cannot be told from exact sampling at this size;
only differences larger than the band mean anything. At this size DDIM needs about 20 evaluations to reach the
band, DPM-Solver++ about 10, and PC with Euler-Maruyama is inside it from 25 steps on: that its points do not
fall further with more steps is below what 4000 samples resolve (more samples, a slower notebook, shrink the
band)."""),
    ("code", """score_vp, m, sets = SCORES["VP"], 4000, 4
ref_m = analytic.sample_mixture(target, jax.random.key(8), m)

@jax.jit
def swd_sets(x):                         # (sets * m, 2) -> the SWD of each of the sets to ref_m
    one = lambda xs: analytic.sliced_wasserstein(xs, ref_m, jax.random.key(3), n_projections=64)
    return jax.vmap(one)(x.reshape(sets, m, 2))

def point(res):                          # one sampler call draws all sets at once: one compile
    d = np.asarray(swd_sets(res.x))
    return int(res.nfe), d.mean(), d.min(), d.max()

floor = np.concatenate([np.asarray(swd_sets(analytic.sample_mixture(target, jax.random.key(k), sets * m)))
                        for k in (7, 9)])
curves = {"PC (Euler-Maruyama)": [], "DDIM": [], "DPM-Solver++": []}
for steps in (5, 10, 20):
    for name, fn in (("DDIM", samplers.ddim_sample), ("DPM-Solver++", samplers.dpm_solver_pp_sample)):
        curves[name].append(point(fn(score_vp, SDES["VP"], (sets * m, 2), jax.random.key(6), num_steps=steps)))
for N in (25, 50, 100, 200):
    curves["PC (Euler-Maruyama)"].append(point(samplers.pc_sample(
        score_vp, sde_lib.VPSDE(N=N), (sets * m, 2), jax.random.key(6), predictor="euler_maruyama",
        corrector="none")))
fig, ax = plt.subplots(figsize=(6, 4))
ax.axhspan(floor.min(), floor.max(), color="0.85", label="floor: two exact sets (range of 8 pairs)")
for name, pts in curves.items():
    nfe, mean, lo, hi = map(np.array, zip(*pts))
    ax.errorbar(nfe, mean, yerr=[mean - lo, hi - mean], fmt="o-", capsize=3, label=name)
ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("score evaluations (NFE)")
ax.set_ylabel("sliced Wasserstein distance"); ax.legend(fontsize=8); ax.set_title(f"VP SDE, exact score, m = {m}")
plt.show()
print(f"floor: {floor.min():.3f} - {floor.max():.3f}")
for name, pts in curves.items():
    print(f"{name:>20s}:", "  ".join(f"NFE {n}: {mean:.3f}" for n, mean, _, _ in pts))"""),
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
