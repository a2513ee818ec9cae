"""Write the tutorial notebooks from the cell lists below (keeps them reviewable as code).

    python experiments/notebooks/build_notebooks.py
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOUR = [
    ("md", """# A tour of scoresde_jax with exact scores

Gaussian-mixture data have a closed-form score under every SDE of the paper, so we can study the samplers and the
likelihood without training anything: any error you see is the sampler's, not the network's."""),
    ("code", """import jax, jax.numpy as jnp, numpy as np
from scoresde_jax import analytic, likelihood, samplers
from scoresde_jax import sde as sde_lib

target = analytic.ring_mixture(n=8, radius=2.0, std=0.2)
sde = sde_lib.VPSDE(beta_min=0.1, beta_max=20.0, N=500)
score_fn = analytic.exact_score_fn(target, sde)
ref = analytic.sample_mixture(target, jax.random.key(0), 1000)"""),
    ("md", "## Predictor-corrector and probability-flow ODE samplers"),
    ("code", """pc = samplers.pc_sample(score_fn, sde, (1000, 2), jax.random.key(1),
                        predictor="reverse_diffusion", corrector="langevin", snr=0.16)
ode = samplers.ode_sample(score_fn, sde, (1000, 2), jax.random.key(2))
swd = lambda x: float(analytic.sliced_wasserstein(x, ref, jax.random.key(3)))
print("PC : nfe", int(pc.nfe), "SWD", swd(pc.x))
print("ODE: nfe", int(ode.nfe), "SWD", swd(ode.x))"""),
    ("md", "## Fast solvers: quality against the number of score evaluations"),
    ("code", """for steps in (5, 10, 20):
    d = samplers.dpm_solver_pp_sample(score_fn, sde, (1000, 2), jax.random.key(4), num_steps=steps)
    h = samplers.heun_sample(score_fn, sde, (1000, 2), jax.random.key(4), num_steps=steps)
    print(f"{steps:3d} steps  DPM-Solver++ nfe={int(d.nfe):3d} SWD={swd(d.x):.3f}   Heun nfe={int(h.nfe):3d} SWD={swd(h.x):.3f}")"""),
    ("md", """## Exact likelihood along the probability-flow ODE

For data with a known density the ODE log-likelihood must equal the closed form (of the marginal at `eps`)."""),
    ("code", """x = ref[:64]
res = likelihood.log_likelihood(score_fn, x, sde=sde, rng=jax.random.key(5), divergence="exact")
exact = analytic.marginal_logp(target, sde, x, jnp.full((64,), 1e-5))
print("max |ODE logp - closed form|:", float(jnp.max(jnp.abs(res.logp - exact))), " nfe:", np.asarray(res.nfe).max())"""),
    ("md", """## Controllable generation: inpainting a correlated Gaussian

Known coordinates are replaced by a forward-perturbed copy at every step (the paper's appendix I). This replacement
is an approximation of the conditional reverse SDE: with strongly correlated coordinates the predictor alone is
biased, and Langevin corrector steps (more of them, or a larger snr) pull the samples toward the exact Gaussian
conditional (Schur complement)."""),
    ("code", """from scoresde_jax import controllable
cov = jnp.array([[1.0, 0.8, 0.3, 0.0], [0.8, 1.0, 0.5, 0.2], [0.3, 0.5, 1.0, 0.6], [0.0, 0.2, 0.6, 1.0]])
gauss = analytic.gaussian(jnp.zeros(4), cov)
sde_ve = sde_lib.VESDE(sigma_min=0.01, sigma_max=10.0, N=300)
data = jnp.tile(jnp.array([[1.0, -1.0, 0.0, 0.0]]), (2000, 1))
mask = jnp.tile(jnp.array([[1.0, 1.0, 0.0, 0.0]]), (2000, 1))
s11, s21 = cov[:2, :2], cov[2:, :2]
print("exact conditional mean:", np.asarray(s21 @ jnp.linalg.solve(s11, jnp.array([1.0, -1.0]))))
for corrector, n_steps in (("none", 1), ("langevin", 3)):
    out = controllable.pc_inpaint(analytic.exact_score_fn(gauss, sde_ve), sde_ve, data, mask, jax.random.key(6),
                                  predictor="reverse_diffusion", corrector=corrector, n_steps=n_steps)
    print(f"{corrector:>8s} x{n_steps}: sample mean of the unknown part", np.asarray(out.x[:, 2:].mean(0)))"""),
]

NOTEBOOKS = {"01_tour_exact_scores.ipynb": TOUR}


def to_ipynb(cells) -> dict:
    out = []
    for kind, src in cells:
        lines = src.splitlines(keepends=True)
        if kind == "md":
            out.append({"cell_type": "markdown", "metadata": {}, "source": lines})
        else:
            out.append({"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                        "source": lines})
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
