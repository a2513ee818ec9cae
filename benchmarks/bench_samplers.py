"""Sampler benchmark: quality (sliced Wasserstein to the target) vs number of score evaluations, and
overhead.

1. Quality vs NFE on the 2-D ring mixture (8 Gaussians, std 0.2, radius 2) with the EXACT score of
   ``scoresde_jax.analytic``, so every difference between samplers is discretization error: PC
   (reverse diffusion + Langevin, and predictor-only), the probability-flow ODE (Tsit5, adaptive),
   DDIM, DPM-Solver++(2M) and Heun. SWD is measured against an independent exact sample set of the
   same size; the "exact" row is the SWD between two exact sample sets (the noise floor, which SWD
   cannot resolve below).  Deterministic samplers also get a "flow RMSE": distance to an accurate
   probability-flow solution from the same prior draw, which resolves discretization error far below
   the SWD noise floor.
2. Overhead: wall time per solver step with a trivial score ``-x`` (the cost of the loop itself),
after compilation.
   Stochastic samplers pay for their Gaussian draws (threefry on CPU dominates for image-sized
   batches).

Prints a table and writes JSON to ``benchmarks/results/bench_samplers.json``.

    .venv/bin/python benchmarks/bench_samplers.py [--sde vp|ve|subvp] [--samples 2000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from scoresde_jax.analytic import exact_score_fn, ring_mixture, sample_mixture  # noqa: E402
from scoresde_jax.sde import VESDE, VPSDE, subVPSDE  # noqa: E402
from scoresde_jax.samplers import (
    data_prediction,
    ddim_sample,
    dpm_solver_pp_sample,
    heun_sample,  # noqa: E402
    ode_sample,
    pc_sample,
    reverse_diffusion,
    sliced_wasserstein,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def make_sde(name: str, n: int):
    if name == "ve":
        return VESDE(sigma_min=0.01, sigma_max=5.0, N=n), 1e-5
    if name == "vp":
        return VPSDE(N=n), 1e-3
    return subVPSDE(N=n), 1e-3


def timed(fn):
    """Run once to compile, then time a second run (returns result, seconds)."""
    jax.block_until_ready(fn(0).x)
    t0 = time.perf_counter()
    out = fn(1)
    jax.block_until_ready(out.x)
    return out, time.perf_counter() - t0


def quality(args):
    mix = ring_mixture()
    shape = (args.samples, 2)
    proj = jax.random.PRNGKey(77)
    ref = sample_mixture(mix, jax.random.PRNGKey(1000), args.samples)
    floor = [
        float(
            sliced_wasserstein(
                sample_mixture(mix, jax.random.PRNGKey(2000 + i), args.samples), ref, proj
            )
        )
        for i in range(5)
    ]
    rows = [
        dict(
            sampler="exact samples",
            setting="-",
            nfe=0,
            swd=float(np.mean(floor)),
            swd_std=float(np.std(floor)),
            seconds=0.0,
        )
    ]
    quick = args.quick
    configs = []  # (name, setting, fn(key, x_init), reference for the flow error or None)
    for n in [50, 200] if quick else [50, 100, 200, 500]:
        configs.append(
            (
                "pc rd+langevin",
                f"N={n}",
                lambda k, x, n=n: pc_sample(
                    score_for(n),
                    make_sde(args.sde, n)[0],
                    shape,
                    jax.random.PRNGKey(k),
                    eps=make_sde(args.sde, n)[1],
                ),
                None,
            )
        )
        configs.append(
            (
                "pc rd only",
                f"N={n}",
                lambda k, x, n=n: pc_sample(
                    score_for(n),
                    make_sde(args.sde, n)[0],
                    shape,
                    jax.random.PRNGKey(k),
                    corrector="none",
                    eps=make_sde(args.sde, n)[1],
                ),
                None,
            )
        )
    sde, eps = make_sde(args.sde, 1000)
    score = exact_score_fn(mix, sde)
    for tol in [1e-2, 1e-4] if quick else [1e-2, 1e-3, 1e-4, 1e-5]:
        configs.append(
            (
                "ode tsit5",
                f"tol={tol:g}",
                lambda k, x, tol=tol: ode_sample(
                    score, sde, shape, jax.random.PRNGKey(k), rtol=tol, atol=tol, eps=eps, x_init=x
                ),
                "rd",
            )
        )
    for n in [10, 50] if quick else [10, 20, 50, 100]:
        configs.append(
            (
                "ddim",
                f"steps={n}",
                lambda k, x, n=n: ddim_sample(
                    score, sde, shape, jax.random.PRNGKey(k), num_steps=n, eps=eps, x_init=x
                ),
                "tweedie",
            )
        )
    for n in [10, 20] if quick else [5, 10, 20, 50]:
        configs.append(
            (
                "dpm_solver_pp",
                f"steps={n}",
                lambda k, x, n=n: dpm_solver_pp_sample(
                    score, sde, shape, jax.random.PRNGKey(k), num_steps=n, eps=eps, x_init=x
                ),
                "tweedie",
            )
        )
    for n in [10, 18] if quick else [5, 10, 18, 35]:
        configs.append(
            (
                "heun",
                f"steps={n}",
                lambda k, x, n=n: heun_sample(
                    score, sde, shape, jax.random.PRNGKey(k), num_steps=n, eps=eps, x_init=x
                ),
                "tweedie",
            )
        )

    # Deterministic samplers all start from the same prior draw x_T; their "flow error" is the RMS
    # distance to an accurate probability-flow solution from x_T (Tsit5, rtol = atol = 1e-7),
    # denoised the way each sampler denoises (Tweedie x0_hat for DDIM / DPM-Solver++ / Heun, reverse
    # diffusion for ode_sample).
    x_T = sde.prior_sampling(jax.random.PRNGKey(3), shape)
    accurate = ode_sample(
        score,
        sde,
        shape,
        jax.random.PRNGKey(0),
        rtol=1e-7,
        atol=1e-7,
        eps=eps,
        x_init=x_T,
        denoise=False,
        max_steps=100_000,
    ).x
    t_eps = jnp.full((shape[0],), eps)
    references = {
        "tweedie": data_prediction(score, sde, accurate, t_eps),
        "rd": reverse_diffusion(score, accurate, t_eps, jnp.zeros_like(accurate), sde=sde)[1],
    }
    for name, setting, fn, ref_kind in configs:
        out, secs = timed(lambda k, fn=fn: fn(k, x_T))
        swd = float(sliced_wasserstein(out.x, ref, proj))
        err = (
            None
            if ref_kind is None
            else float(jnp.sqrt(jnp.mean((out.x - references[ref_kind]) ** 2)))
        )
        rows.append(
            dict(
                sampler=name,
                setting=setting,
                nfe=int(out.nfe),
                swd=swd,
                flow_rmse=err,
                seconds=secs,
            )
        )
        err_txt = "" if err is None else f" flow_rmse={err:.2e}"
        print(
            f"  {name:16s} {setting:10s} nfe={int(out.nfe):5d} swd={swd:.4f}{err_txt} "
            f"({secs:.2f}s)",
            flush=True,
        )
    return rows


_SCORES = {}


def score_for(n):
    """Exact score of the ring under the benchmark SDE with n levels (cached so each compiles
    once)."""
    if n not in _SCORES:
        _SCORES[n] = exact_score_fn(ring_mixture(), make_sde(ARGS.sde, n)[0])
    return _SCORES[n]


def trivial_score(x, t):
    del t
    return -x


def overhead(args):
    rows = []
    shapes = [(128, 2), (16, 32, 32, 3)]
    for shape in shapes:
        n = 200
        sde, eps = make_sde(args.sde, n)
        cases = [
            (
                "pc rd+langevin",
                n,
                lambda k: pc_sample(trivial_score, sde, shape, jax.random.PRNGKey(k), eps=eps),
            ),
            (
                "pc em only",
                n,
                lambda k: pc_sample(
                    trivial_score,
                    sde,
                    shape,
                    jax.random.PRNGKey(k),
                    predictor="euler_maruyama",
                    corrector="none",
                    eps=eps,
                ),
            ),
            (
                "ddim",
                n - 1,
                lambda k: ddim_sample(
                    trivial_score, sde, shape, jax.random.PRNGKey(k), num_steps=n, eps=eps
                ),
            ),
            (
                "dpm_solver_pp",
                n - 1,
                lambda k: dpm_solver_pp_sample(
                    trivial_score, sde, shape, jax.random.PRNGKey(k), num_steps=n, eps=eps
                ),
            ),
            (
                "heun",
                n - 1,
                lambda k: heun_sample(
                    trivial_score, sde, shape, jax.random.PRNGKey(k), num_steps=n, eps=eps
                ),
            ),
            (
                "ode tsit5",
                None,
                lambda k: ode_sample(trivial_score, sde, shape, jax.random.PRNGKey(k), eps=eps),
            ),
        ]
        for name, steps, fn in cases:
            out, secs = timed(fn)
            nfe = int(out.nfe)
            per_step = secs / steps if steps else None
            rows.append(
                dict(
                    sampler=name,
                    shape=list(shape),
                    steps=steps,
                    nfe=nfe,
                    seconds=secs,
                    us_per_step=None if per_step is None else 1e6 * per_step,
                    us_per_nfe=1e6 * secs / max(nfe, 1),
                )
            )
            step_txt = f"{1e6 * per_step:8.1f} us/step" if per_step else "   (adaptive)    "
            print(
                f"  {name:16s} {str(shape):16s} {step_txt} {1e6 * secs / max(nfe, 1):8.1f} us/nfe "
                f"(nfe={nfe})",
                flush=True,
            )
    return rows


def main(argv=None):
    global ARGS
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sde", default="vp", choices=["vp", "ve", "subvp"])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="fewer settings")
    parser.add_argument("--out", default=os.path.join(RESULTS, "bench_samplers.json"))
    ARGS = args = parser.parse_args(argv)
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}), "
        f"sde={args.sde}, samples={args.samples}"
    )
    print("Quality vs NFE (ring mixture, exact score):")
    q = quality(args)
    print("Overhead (trivial score):")
    o = overhead(args)

    print("\n| sampler | setting | NFE | SWD | flow RMSE | time (s) |\n|---|---|---|---|---|---|")
    for r in q:
        extra = f" +- {r['swd_std']:.4f}" if "swd_std" in r else ""
        err = "-" if r.get("flow_rmse") is None else f"{r['flow_rmse']:.2e}"
        print(
            f"| {r['sampler']} | {r['setting']} | {r['nfe']} | {r['swd']:.4f}{extra} | {err} | "
            f"{r['seconds']:.2f} |"
        )
    print("\n| sampler | shape | steps | NFE | us/step | us/NFE |\n|---|---|---|---|---|---|")
    for r in o:
        ups = "adaptive" if r["us_per_step"] is None else f"{r['us_per_step']:.1f}"
        print(
            f"| {r['sampler']} | {tuple(r['shape'])} | {r['steps'] or '-'} | {r['nfe']} | {ups} | "
            f"{r['us_per_nfe']:.1f} |"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    meta = dict(
        jax=jax.__version__,
        backend=jax.devices()[0].platform,
        device=jax.devices()[0].device_kind,
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
        sde=args.sde,
        samples=args.samples,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, quality=q, overhead=o), f, indent=1)
    print(f"\nwrote {args.out}")


ARGS = None

if __name__ == "__main__":
    main()
