"""Sampler benchmark: quality vs NFE for every method of ``samplers.SAMPLERS`` (issue 11).

1. Flow error on exact Gaussian-mixture scores (16-D, 6 modes, VP SDE, float64): RMS distance of
   the final state at ``t = eps`` (no denoising) to a tight probability-flow solve (Tsit5,
   ``rtol = atol = 1e-9``) from the same prior draws, divided by the data's standard deviation.
   Deterministic methods only; every method runs under ``samplers.sample(..., nfe=budget)`` with
   its default options (grid: ``samplers.default_grid``).  The RMS is heavy-tailed: the few draws
   whose path passes near a boundary between modes carry most of it (at 128 draws one draw of
   error 0.25 alone contributes 0.022), so it is measured on 2048 draws and the per-draw median
   is reported beside it.
2. Sliced Wasserstein distance (with Tweedie denoising) to an exact sample set of the same size,
   for every method, beside the floor: the SWD between independent exact sets (mean +- std over
   several pairs; one pair alone varies by ~2x).
3. Digits FID (the digits classifier's Frechet distance to the held-out test digits,
   :func:`sample_quality` of the ``sample`` job's samples) vs NFE from a trained demo workdir
   (``python3 dev.py main`` trains ``runs/quickstart``): the reference is PC (the config's
   predictor/corrector) at ``--digits_pc_nfe`` evaluations, twice with different seeds (the FID
   noise of this sample size), then each of ``--digits_methods`` at each NFE; skipped with a
   message when the workdir has no checkpoint.

Every row carries ``trace_s`` (jit trace + lower) and ``compile_s`` (XLA compile) of its sampler's
jitted program, timed apart from running it (issue 14; ``MIXTURE_NOTE`` / ``DIGITS_NOTE``).

Prints tables, writes ``benchmarks/results/bench_samplers.json`` (mixture),
``benchmarks/results/bench_samplers_digits.json`` (digits, when the workdir is trained) and a
quality-vs-NFE plot ``benchmarks/results/bench_samplers.png``.

    .venv/bin/python benchmarks/bench_samplers.py [--samples 2048] [--nfe 5 10 20 50]
        [--methods ...] [--workdir runs/quickstart] [--digits_samples 500] [--digits_nfe ...]
        [--digits_methods ...] [--digits_pc_nfe 1000] [--skip_mixture]
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

from benchmarks.common import compile_timed, round_program_timed, trace_compile_s  # noqa: E402
from scoresde_jax import config as config_lib  # noqa: E402
from scoresde_jax import evaluation, samplers  # noqa: E402
from scoresde_jax.analytic import GaussianMixture, exact_score_fn, sample_mixture  # noqa: E402
from scoresde_jax.jobs import sample as sample_job  # noqa: E402
from scoresde_jax.sde import VPSDE  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DETERMINISTIC = ("ddim", "dpm_solver_pp", "dpm_solver_pp_3m", "dpm_solver_pp_2s", "unipc", "heun")
METHODS = DETERMINISTIC + ("edm", "adaptive_sde", "pc")
OPTIONS = {"edm": {"S_churn": 10.0}}  # benchmarked settings beyond the defaults
MIXTURE_NOTE = (
    "per row: trace_s = jit trace + lower, compile_s = XLA compile of the row's sampler program "
    "(samplers.sample in one jit over the key, denoised: the program 'seconds' times; "
    "benchmarks.common.compile_timed); seconds = trace + lower + compile + its first call, run_s "
    "= that call alone; flow_trace_s / flow_compile_s: the deterministic methods' second program "
    "(x_init given, no denoising) that gives the flow error")
DIGITS_NOTE = (
    "per row: trace_s = jit trace + lower, compile_s = XLA compile of the sampling round that "
    "the sample job jits (jobs.generate.make_generator for the row's method / NFE / grid and "
    "batch, traced on the abstract EMA parameters, compiled apart from the job's own compile); "
    "fid: evaluation.digits_metrics of the job's samples against the held-out test digits; "
    "rows that differ only in the seed (PC at --digits_pc_nfe, seeds 0 and 1) share one program: "
    "its compile is timed once and recorded on each")


def mixture(dtype=jnp.float64) -> GaussianMixture:
    """16-D, 6 equal-weight modes, means ~ N(0, I), diagonal variances in [0.05, 0.3]."""
    rng = np.random.default_rng(0)
    d, k = 16, 6
    means = rng.normal(size=(k, d))
    covs = np.stack([np.diag(rng.uniform(0.05, 0.3, d)) for _ in range(k)])
    return GaussianMixture(jnp.full((k,), 1.0 / k, dtype), jnp.asarray(means, dtype),
                           jnp.asarray(covs, dtype), (d,))


def sampler_program(score, sde, shape, kw: dict, rng, x_init=None, *, denoise: bool = True):
    """``(compiled, compile_timed info)`` of ``samplers.sample(score, sde, shape, rng, **kw)``
    (with ``x_init`` and ``denoise``) in one ``jax.jit`` over ``rng`` (and ``x_init``): the
    sampler's jitted program, its trace / lower / compile timed separately (issue 14)."""
    if x_init is None:
        fn = jax.jit(lambda key: samplers.sample(score, sde, shape, key, denoise=denoise, **kw))
        return compile_timed(fn, rng)
    fn = jax.jit(lambda key, x0: samplers.sample(score, sde, shape, key, x_init=x0,
                                                 denoise=denoise, **kw))
    return compile_timed(fn, rng, x_init)


def mixture_row(score, sde, method: str, budget: int, *, eps: float, x_T, ref, std: float,
                exact, proj) -> dict:
    """One row of the mixture sweep: ``method`` under a budget of ``budget`` evaluations from
    prior draws of ``x_T``'s shape; the flow error (deterministic methods: ``x_T`` solved without
    denoising, against ``ref``, over ``std``) and the SWD of the denoised samples to ``exact``
    (projections ``proj``). Each program is traced, lowered and compiled explicitly
    (:func:`sampler_program`): ``trace_s`` / ``compile_s`` of the denoised program (the one
    ``seconds`` times: trace + lower + compile + first call; ``run_s`` that call alone),
    ``flow_trace_s`` / ``flow_compile_s`` of the flow-error program. Raises ValueError for a
    budget the method cannot meet."""
    shape = x_T.shape
    kw = dict(method=method, nfe=budget, eps=eps, **OPTIONS.get(method, {}))
    t0 = time.perf_counter()
    sample_fn, info = sampler_program(score, sde, shape, kw, jax.random.PRNGKey(5))
    den = sample_fn(jax.random.PRNGKey(5))
    jax.block_until_ready(den.x)
    secs = time.perf_counter() - t0
    run_s = secs - info["trace_s"] - info["lower_s"] - info["compile_s"]
    row = dict(method=method, nfe_budget=budget, nfe=int(den.nfe), flow_error=None,
               flow_error_median=None, swd=float(samplers.sliced_wasserstein(den.x, exact, proj)),
               seconds=secs, run_s=round(run_s, 4), **trace_compile_s(info),
               options=OPTIONS.get(method, {}))
    if method in DETERMINISTIC:  # its own program (x_init given, no denoising)
        raw_fn, flow = sampler_program(score, sde, shape, kw, jax.random.PRNGKey(5), x_T,
                                       denoise=False)
        raw = raw_fn(jax.random.PRNGKey(5), x_T)
        per_draw = np.sqrt(np.mean(np.asarray(raw.x - ref) ** 2, axis=1)) / std
        row.update(flow_error=float(np.sqrt(np.mean(per_draw**2))),
                   flow_error_median=float(np.median(per_draw)),
                   flow_trace_s=trace_compile_s(flow)["trace_s"], flow_compile_s=flow["compile_s"])
    return row


def mixture_rows(args) -> tuple[list[dict], dict]:
    mix = mixture()
    sde, eps = VPSDE(), 1e-3
    score = exact_score_fn(mix, sde)
    std = float(jnp.sqrt(jnp.mean(jnp.diag(mix.cov))))
    n, d = args.samples, mix.dim
    x_T = jax.random.normal(jax.random.PRNGKey(0), (n, d), jnp.float64)
    ref = samplers.ode_sample(score, sde, (n, d), None, rtol=1e-9, atol=1e-9, eps=eps,
                              x_init=x_T, denoise=False, max_steps=100_000).x
    proj = jax.random.PRNGKey(77)
    exact = [sample_mixture(mix, jax.random.PRNGKey(1000 + i), n) for i in range(6)]
    pairs = [float(samplers.sliced_wasserstein(exact[0], e, proj)) for e in exact[1:]]
    floor = {"swd_mean": float(np.mean(pairs)), "swd_std": float(np.std(pairs)), "pairs": pairs}
    rows = []
    for method in args.methods:
        for budget in args.nfe:
            try:
                rows.append(mixture_row(score, sde, method, budget, eps=eps, x_T=x_T, ref=ref,
                                        std=std, exact=exact[0], proj=proj))
            except ValueError as e:  # e.g. too few PC levels for the DDPM chain
                print(f"  {method:18s} nfe<={budget:3d} skipped: {e}")
                continue
            r = rows[-1]
            e_txt = "-" if r["flow_error"] is None else f"{r['flow_error']:.4f}"
            print(f"  {method:18s} nfe<={budget:3d} used={r['nfe']:3d} flow_err={e_txt:>7s} "
                  f"swd={r['swd']:.4f} ({r['seconds']:.1f}s: trace {r['trace_s']:.2f}s, compile "
                  f"{r['compile_s']:.2f}s, run {r['run_s']:.2f}s)", flush=True)
    return rows, {"data_std": std, "samples": n, "floor": floor}


def sample_quality(setup, samples) -> dict:
    """The quality of a digits row's in-memory samples: the digits classifier's FID / IS / KID
    against the held-out test digits (:func:`scoresde_jax.evaluation.digits_metrics`, resized as
    ``data.digits_resize``); sliced Wasserstein distances to exact samples for the ``TOY_*``
    mixtures; ``{}`` for other data."""
    d = setup.data
    if d.vector:
        return evaluation.toy_metrics(d.name, samples, seed=setup.seed)
    if d.name.upper() != "DIGITS":
        return {}
    method = str(d.options.get("digits_resize", "bilinear"))
    return {k: float(v) for k, v in evaluation.digits_metrics(samples, method=method).items()}


def digits_rows(args) -> list[dict] | str:
    ckpt = os.path.join(args.workdir, "checkpoints")
    if not (os.path.isdir(ckpt) and os.listdir(ckpt)):
        return (f"no trained workdir at {args.workdir} (train it with `python3 dev.py main`); "
                "digits FID rows skipped")
    rows = []
    steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()]
    step = args.digits_checkpoint or (max(steps) if steps else None)  # one checkpoint for all rows
    plan = [("pc", args.digits_pc_nfe, 0, None)]
    plan += [(m, k, 0, None) for k in (args.digits_nfe or args.nfe) for m in args.digits_methods]
    plan += [(m, k, 0, g) for g in args.digits_grids for k in (args.digits_nfe or args.nfe)
             for m in args.digits_methods if m != "pc"]
    plan += [("pc", args.digits_pc_nfe, 1, None)]  # last: the FID noise between two PC seeds
    n = args.digits_samples
    programs = {}  # (method, budget, grid) -> trace / compile seconds: the seeds share a program
    setups = {}  # grid -> (config, setup)
    for method, budget, seed, grid in plan:
        if grid not in setups:
            cfg = config_lib.load_config(
                args.config, overrides=[] if grid is None else [f"sampling.grid={grid}"])
            setups[grid] = cfg, config_lib.setup(cfg)
        cfg, setup = setups[grid]
        if (method, budget, grid) not in programs:  # the round the sample job jits, timed apart
            programs[method, budget, grid] = trace_compile_s(round_program_timed(
                cfg, batch_size=n, method=method, nfe=budget))
        timing = programs[method, budget, grid]
        out = os.path.join(args.workdir, "samples",
                           f"bench_{step}_{method}_{budget}_n{n}_seed{seed}"
                           + (f"_{grid}" if grid else ""))
        t0 = time.perf_counter()
        options = config_lib.sample_options(cfg, setup, method=method, nfe=budget, num_samples=n,
                                            out=out, batch_size=n, seed=seed, checkpoint=step,
                                            progress=False)
        x, s = sample_job.sample(setup, options, args.workdir)
        q = sample_quality(setup, x)
        rows.append(dict(method=method, nfe_budget=budget, nfe=s["nfe"], seed=seed, grid=grid,
                         fid=q.get("fid"), seconds_per_image=s["seconds_per_image"],
                         checkpoint_step=s.get("checkpoint_step"), samples=n,
                         seconds=time.perf_counter() - t0, **timing))
        with open(os.path.splitext(args.out)[0] + "_digits.partial.json", "w") as fh:
            json.dump(rows, fh, indent=1)  # kept row by row: a long run can be stopped
        print(f"  digits {method:18s} grid={grid or 'default'} nfe={s['nfe']:5d} seed={seed} "
              f"fid={q.get('fid'):.3f} trace {timing['trace_s']:.1f}s compile "
              f"{timing['compile_s']:.1f}s "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def plot(rows, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        fe = [r for r in rs if r["flow_error"] is not None]
        if fe:
            axes[0].plot([r["nfe"] for r in fe], [r["flow_error"] for r in fe], "o-", label=method)
        axes[1].plot([r["nfe"] for r in rs], [r["swd"] for r in rs], "o-", label=method)
    axes[1].axhspan(floor["swd_mean"] - floor["swd_std"], floor["swd_mean"] + floor["swd_std"],
                    color="gray", alpha=0.3, label="exact vs exact")
    for ax, name in zip(axes, ("flow error / data std", "sliced Wasserstein")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.suptitle("16-D 6-mode Gaussian mixture, VP SDE, exact scores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--workdir", default="runs/quickstart")
    p.add_argument("--config", default="configs/digits_ddpmpp.py")
    p.add_argument("--digits_samples", type=int, default=500)
    p.add_argument("--digits_nfe", type=int, nargs="+", default=None, help="default: --nfe")
    p.add_argument("--digits_methods", nargs="+",
                   default=["ddim", "dpm_solver_pp", "dpm_solver_pp_3m", "unipc"])
    p.add_argument("--digits_pc_nfe", type=int, default=1000)
    p.add_argument("--digits_checkpoint", type=int, default=None, help="default: the newest")
    p.add_argument("--digits_grids", nargs="*", default=[],
                   help="extra rows with sampling.grid set (e.g. logsnr) for the ODE methods")
    p.add_argument("--skip_mixture", action="store_true", help="digits rows only")
    p.add_argument("--out", default=os.path.join(RESULTS, "bench_samplers.json"))
    args = p.parse_args(argv)
    dev = jax.devices()[0]
    meta = dict(jax=jax.__version__, backend=dev.platform, device=dev.device_kind,
                python=platform.python_version(), cpu_count=os.cpu_count(),
                load_avg=os.getloadavg()[0], time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    print(f"jax {jax.__version__} on {dev.platform} ({dev.device_kind}), samples={args.samples}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    if not args.skip_mixture:
        print("Mixture (exact scores):")
        with jax.enable_x64(True):
            rows, info = mixture_rows(args)
        f = info["floor"]
        print(f"\nSWD floor (exact vs exact): {f['swd_mean']:.4f} +- {f['swd_std']:.4f}")
        print("\n| method | NFE budget | NFE used | flow error (RMS) | median | SWD | s | trace s "
              "| compile s |\n|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            err = "-" if r["flow_error"] is None else f"{r['flow_error']:.4f}"
            med = "-" if r["flow_error_median"] is None else f"{r['flow_error_median']:.4f}"
            print(f"| {r['method']} | {r['nfe_budget']} | {r['nfe']} | {err} | {med} | "
                  f"{r['swd']:.4f} | {r['seconds']:.1f} | {r['trace_s']:.2f} | "
                  f"{r['compile_s']:.2f} |")
        for budget, goal in ((10, 0.061), (20, 0.021)):
            fe = [r for r in rows if r["flow_error"] is not None and r["nfe"] <= budget]
            if fe:
                best = min(fe, key=lambda r: r["flow_error"])
                print(f"goal NFE <= {budget}: flow error <= {goal}: best {best['method']} "
                      f"{best['flow_error']:.4f} ({'met' if best['flow_error'] <= goal else 'NOT met'})")
        png = os.path.splitext(args.out)[0] + ".png"
        plot(rows, f, png)
        with open(args.out, "w") as fh:
            json.dump(dict(meta={**meta, **info, "note": MIXTURE_NOTE}, mixture=rows), fh,
                      indent=1)
        print(f"\nwrote {args.out} and {png}")
    print("Digits FID vs NFE:")
    digits = digits_rows(args)
    if isinstance(digits, str):
        print("  " + digits)
        return
    ref = [r["fid"] for r in digits if r["method"] == "pc"]
    print(f"\nPC reference ({args.digits_pc_nfe} NFE, seeds 0 and 1): FID {ref}")
    print("| method | grid | NFE | FID | FID / PC (seed 0) | trace s | compile s |\n"
          "|---|---|---|---|---|---|---|")
    for r in digits:
        print(f"| {r['method']} | {r['grid'] or 'default'} | {r['nfe']} | {r['fid']:.3f} | "
              f"{r['fid'] / ref[0]:.3f} | {r['trace_s']:.1f} | {r['compile_s']:.1f} |")
    out = os.path.splitext(args.out)[0] + "_digits.json"
    with open(out, "w") as fh:
        json.dump(dict(meta={**meta, "workdir": args.workdir, "config": args.config,
                             "note": DIGITS_NOTE}, digits=digits), fh, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
