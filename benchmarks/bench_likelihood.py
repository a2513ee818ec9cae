"""Cost and accuracy of the likelihood ODE (``log_likelihood``, the solve inside ``bits_per_dim``):
exact divergence vs Hutchinson (Rademacher, Gaussian) by dimension. Gaussian data are not 8-bit
images in [0, 1], so the log-likelihood is computed in nats (``bits_per_dim`` rejects them);
errors are reported per dimension in bits.

The "model" is the exact score of Gaussian data ``N(mu, S)`` with a full covariance, written as the
linear map ``score(x, t) = -U diag(1 / (a^2 lam + s^2)) U^T (x - a mu)`` (``S = U diag(lam) U^T``):
one ``D x D`` matrix product per evaluation, like a linear layer, so the cost of the divergence
relative to one drift evaluation is representative.  The closed-form ``log p_eps`` (and the true
``p_T``, to remove the prior mismatch) gives the error.

Prints a table and writes ``benchmarks/results/bench_likelihood.json``.

    .venv/bin/python benchmarks/bench_likelihood.py [--dims 4 16 64 256] [--batch 16] [--sde vp]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.common import compile_timed, trace_compile_s  # noqa: E402
from scoresde_jax import likelihood as lk  # noqa: E402
from scoresde_jax import sde as sde_lib  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
EPS = 1e-5


def _gaussian_score(params, x, t):
    """Exact score of N(mu, U diag(lam) U^T) under the SDE (``params = (mu, u, lam,
    sde_coeffs)``)."""
    mu, u, lam, sde = params["mu"], params["u"], params["lam"], params["sde"]
    a = sde.mean_coeff(t)[:, None]
    s = sde.marginal_std(t)[:, None]
    diff = (x - a * mu) @ u
    return -(diff / (a**2 * lam + s**2)) @ u.T


def _gaussian_logp(mu, u, lam, a, s, x):
    var = a**2 * lam + s**2
    diff = (x - a * mu) @ u
    d = x.shape[-1]
    return -0.5 * (np.sum(diff**2 / var, -1) + np.sum(np.log(var)) + d * math.log(2 * math.pi))


def _coeffs(sde, t):
    tt = jnp.asarray([t], jnp.float32)
    return float(sde.mean_coeff(tt)[0]), float(sde.marginal_std(tt)[0])


def run(dims, batch, sde_name, kinds, repeats):
    sde = {"ve": sde_lib.VESDE(), "vp": sde_lib.VPSDE(), "subvp": sde_lib.subVPSDE()}[sde_name]
    rows = []
    for d in dims:
        rng = np.random.default_rng(d)
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        lam = np.exp(rng.uniform(np.log(0.2), np.log(2.0), size=d))
        mu = rng.normal(size=d) * 0.5
        x = mu + (rng.normal(size=(batch, d)) * np.sqrt(lam)) @ q.T
        a0, s0 = _coeffs(sde, EPS)
        a1, s1 = _coeffs(sde, sde.T)
        ref = _gaussian_logp(mu, q, lam, a0, s0, x)
        f32 = lambda v: jnp.asarray(v, jnp.float32)  # noqa: E731
        for kind in kinds:
            score = Partial(
                lambda p, x_, t_: _gaussian_score({**p, "sde": sde}, x_, t_),
                {"mu": f32(mu), "u": f32(q), "lam": f32(lam)},
            )
            # the jitted program of the row: log_likelihood (a module-level jit taking the score
            # as a pytree) inside one jit over (score, x, rng), traced, lowered and compiled
            # explicitly (compile_timed), then called compiled
            fn = jax.jit(lambda score_, x_, rng_, kind=kind: lk.log_likelihood(
                score_, x_, sde=sde, rng=rng_, divergence=kind, eps=EPS))  # Gaussian: nats
            xs = f32(x)
            t0 = time.perf_counter()
            compiled, info = compile_timed(fn, score, xs, jax.random.key(0))
            res = compiled(score, xs, jax.random.key(0))
            jax.block_until_ready(res)
            first = time.perf_counter() - t0
            times = []
            for r in range(repeats):
                t0 = time.perf_counter()
                res = compiled(score, xs, jax.random.key(r + 1))
                jax.block_until_ready(res)
                times.append(time.perf_counter() - t0)
            run_s = float(np.median(times))
            logp = np.asarray(res.logp, np.float64)
            z = np.asarray(res.latent, np.float64)
            with_true_pt = (
                logp
                - np.asarray(sde.prior_logp(res.latent), np.float64)
                + _gaussian_logp(mu, q, lam, a1, s1, z)
            )
            err_bpd = (with_true_pt - ref) / (d * math.log(2))
            rows.append(
                dict(
                    dim=d,
                    divergence=kind,
                    batch=batch,
                    compile_and_first_s=round(first, 3),  # trace + lower + compile + 1st call
                    **trace_compile_s(info),  # trace_s: jit trace + lower; compile_s: XLA
                    run_s=round(run_s, 4),
                    ms_per_example=round(1e3 * run_s / batch, 3),
                    nfe_mean=float(np.mean(np.asarray(res.nfe))),
                    bpd_err_mean=float(np.mean(err_bpd)),
                    bpd_err_abs_max=float(np.max(np.abs(err_bpd))),
                    bpd_err_std=float(np.std(err_bpd)),
                )
            )
            r_ = rows[-1]
            print(
                f"{d:>5} {kind:>10} {r_['trace_s']:>7.2f} {r_['compile_s']:>9.2f} "
                f"{r_['compile_and_first_s']:>9.2f} {r_['run_s']:>8.4f} "
                f"{r_['ms_per_example']:>8.3f} {r_['nfe_mean']:>7.1f} {r_['bpd_err_mean']:>+10.2e} "
                f"{r_['bpd_err_std']:>9.2e} {r_['bpd_err_abs_max']:>9.2e}",
                flush=True,
            )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 16, 64, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sde", default="vp", choices=["ve", "vp", "subvp"])
    parser.add_argument("--kinds", nargs="+", default=["exact", "rademacher", "gaussian"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS / "bench_likelihood.json"))
    args = parser.parse_args()
    print(
        f"bits_per_dim, {args.sde.upper()} SDE, float32, batch {args.batch}, "
        "rtol = atol = 1e-5, tsit5"
    )
    print(
        f"{'D':>5} {'divergence':>10} {'trace_s':>7} {'compile_s':>9} {'compile+1':>9} "
        f"{'run_s':>8} {'ms/ex':>8} {'nfe':>7} "
        f"{'err_mean':>10} {'err_std':>9} {'err_max':>9}   (errors in bits/dim vs closed form)"
    )
    rows = run(args.dims, args.batch, args.sde, args.kinds, args.repeats)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        benchmark="bench_likelihood",
        sde=args.sde,
        dtype="float32",
        rtol=1e-5,
        atol=1e-5,
        solver="tsit5",
        jax=jax.__version__,
        backend=jax.default_backend(),
        device=str(jax.devices()[0]),
        machine=platform.machine(),
        cpu_count=os.cpu_count(),
        load_average_1m=round(os.getloadavg()[0], 2),  # a shared machine: compare within a run
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        note="per row: trace_s = jit trace + lower, compile_s = XLA compile of the row's program "
        "(log_likelihood in one jit over (score, x, rng); compile_timed), compile_and_first_s = "
        "those + the first call, run_s = median of the warm calls",
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
