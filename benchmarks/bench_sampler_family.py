"""Few-step sampler defaults over a family of exact-score Gaussian mixtures (issue 24).

The defaults of the fast deterministic samplers (time grid, order, final-step handling) were first
chosen on one 16-D mixture (``bench_samplers.py``).  This benchmark draws a seeded family of
mixtures -- dimension 2-64, 2-20 modes, within-mode standard deviations 0.05-0.5, each under the
paper's VP, sub-VP or VE SDE (sampling ``eps`` 1e-3, 1e-3, 1e-5) -- and measures, for each method
and candidate setting at each NFE budget, the flow error of every member: the RMS over prior draws
``x_T`` of the distance between the method's state at ``t = eps`` (no denoising) and a tight
probability-flow solve (Tsit5, ``rtol = atol = 1e-9``, ``--rtol``) from the same draws, divided
by the data's standard deviation (``bench_samplers.py``'s definition).  Beside it: the draws that
end nearest to another mode than the reference ("switched": one such draw of error ~1.5 among 256
adds ~0.09 to the RMS) and the RMS over the other draws.  Settings are then compared by their
WORST member, not by one mixture; the median is reported beside it.

Exact scores: every member has diagonal covariances, so its score has the closed form
``sum_k r_k(x) (a mu_k - x) / (a^2 var_k + s^2)`` (``r_k`` the posterior mode weights), which costs
``O(K D)`` per draw instead of the ``O(K D^2)`` of the general
:func:`scoresde_jax.analytic.exact_score_fn`; :func:`check_scores` compares the two on every member
before the sweep.  All members of one SDE run as one batch (padded to 64 dimensions and 20 modes:
zero-weight modes and zero-variance dimensions, which leave the other coordinates' flow unchanged
and are left out of the error), so each sampler program compiles once per SDE, not per member.

Prints a table of worst / median flow error per method and setting, writes
``benchmarks/results/bench_sampler_family.json`` and ``bench_sampler_family.png``.

    .venv/bin/python benchmarks/bench_sampler_family.py [--members 30] [--draws 256]
        [--nfe 5 10 15 20] [--default_nfe 40] [--methods ...] [--defaults_only] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from benchmarks.bench_samplers import DETERMINISTIC  # noqa: E402
from scoresde_jax import samplers  # noqa: E402
from scoresde_jax.analytic import GaussianMixture, exact_score_fn  # noqa: E402
from scoresde_jax.sde import VESDE, VPSDE, subVPSDE  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SDES = {"vp": (VPSDE(), 1e-3), "subvp": (subVPSDE(), 1e-3), "ve": (VESDE(), 1e-5)}
"""The paper's SDEs (beta 0.1..20; sigma 0.01..50) and sampling ``eps``."""
D_MAX, K_MAX = 64, 20
GOALS = ((10, 0.061), (20, 0.021))
"""Issue 24: the best method's default, on every member: flow error <= 0.061 at <= 10 NFE and
<= 0.021 at <= 20 NFE."""
GRIDS = ("uniform", "quadratic", "logsnr", "edm")
WIDE = ("unipc", "dpm_solver_pp_3m")
"""The methods whose grids (and UniPC's order and final step) are swept: the best at few steps."""
CORNERS = ((64, 20, 0.05, 0.05), (2, 2, 0.05, 0.05), (64, 2, 0.5, 0.5))
"""``(dim, modes, smallest std, largest std)`` of the members that every SDE gets first: the
extremes of the family, which a random draw may miss."""


class Member(NamedTuple):
    """One mixture of the family: ``weights (K,)``, ``means (K, d)``, per-dimension variances
    ``variances (K, d)`` (diagonal covariances), under the SDE named ``sde``."""

    name: str
    sde: str
    weights: np.ndarray
    means: np.ndarray
    variances: np.ndarray

    @property
    def std(self) -> float:
        """The data's standard deviation: ``sqrt(mean(diag(cov)))`` of the whole mixture."""
        w, mu = self.weights, self.means
        mean = w @ mu
        second = np.einsum("k,kd->d", w, self.variances + mu**2)
        return float(np.sqrt(np.mean(second - mean**2)))

    def mixture(self) -> GaussianMixture:
        """As :class:`scoresde_jax.analytic.GaussianMixture` (float64)."""
        covs = jax.vmap(jnp.diag)(jnp.asarray(self.variances))
        return GaussianMixture(jnp.asarray(self.weights), jnp.asarray(self.means), covs)


def _member(rng, sde: str, dim: int, modes: int, lo: float, hi: float, index: int) -> Member:
    means = rng.normal(size=(modes, dim))
    stds = rng.uniform(lo, hi, size=(modes, dim))
    weights = rng.uniform(0.5, 1.5, modes)
    return Member(f"{sde}-{index:02d}-d{dim}-k{modes}-s{lo:.2f}-{hi:.2f}", sde,
                  weights / weights.sum(), means, stds**2)


def family(members: int, seed: int = 0) -> list[Member]:
    """``members`` mixtures (a multiple of 3 is fair), drawn with ``seed``: the SDEs in turn; each
    SDE's first members are :data:`CORNERS`, the rest draw the dimension log-uniform in 2..64, the
    modes uniform in 2..20, two stds log-uniform in 0.05..0.5 (each mode's per-dimension stds
    uniform between them), means ``N(0, I)`` and weights uniform in 0.5..1.5, normalized."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(members):
        sde, j = tuple(SDES)[i % 3], i // 3
        if j < len(CORNERS):
            out.append(_member(rng, sde, *CORNERS[j], i))
            continue
        dim = int(np.clip(np.round(np.exp(rng.uniform(np.log(2), np.log(D_MAX)))), 2, D_MAX))
        lo, hi = np.sort(np.exp(rng.uniform(np.log(0.05), np.log(0.5), 2)))
        out.append(_member(rng, sde, dim, int(rng.integers(2, K_MAX + 1)), lo, hi, i))
    return out


def padded(members: list[Member]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(weights (M, 20), means (M, 20, 64), variances (M, 20, 64))``: zero-weight copies of mode 0
    and zero-mean, zero-variance dimensions pad every member to the same shape."""
    w = np.zeros((len(members), K_MAX))
    mu = np.zeros((len(members), K_MAX, D_MAX))
    var = np.zeros((len(members), K_MAX, D_MAX))
    for m, mem in enumerate(members):
        k, d = mem.means.shape
        w[m, :k] = mem.weights
        mu[m, :, :d] = np.concatenate([mem.means, np.repeat(mem.means[:1], K_MAX - k, 0)])
        var[m, :, :d] = np.concatenate([mem.variances, np.repeat(mem.variances[:1], K_MAX - k, 0)])
    return jnp.asarray(w), jnp.asarray(mu), jnp.asarray(var)


def _components(weights, means, variances, sde, x, t):
    """``(log w_k + log N(x; a mu_k, v_k) + c, (a mu_k - x) / v_k)``, ``v_k = a^2 var_k + s^2``,
    for one diagonal-covariance mixture at ``x (n, D)`` and times ``t (n,)``."""
    a, s = sde.mean_coeff(t)[:, None, None], sde.marginal_std(t)[:, None, None]
    v = a**2 * variances[None] + s**2  # (n, K, D)
    diff = a * means[None] - x[:, None, :]
    return jnp.log(weights)[None] - 0.5 * jnp.sum(diff**2 / v + jnp.log(v), axis=-1), diff / v


def diagonal_score(weights, means, variances, sde, x, t):
    """The exact score of one diagonal-covariance mixture at ``x (n, D)``, times ``t (n,)``:
    ``sum_k r_k (a mu_k - x) / (a^2 var_k + s^2)``, ``r_k`` the softmax over ``k`` of ``log w_k +
    log N(x; a mu_k, a^2 var_k + s^2)`` (zero-weight modes get ``r_k = 0``)."""
    logc, g = _components(weights, means, variances, sde, x, t)
    return jnp.einsum("nk,nkd->nd", jax.nn.softmax(logc, axis=-1), g)


def batch_score(params, sde, draws: int):
    """``score(x, t)`` of the stacked members ``params`` (:func:`padded`) for a batch of ``M *
    draws`` states, member ``m`` owning rows ``m * draws ... (m + 1) * draws - 1``."""
    m, _, d = params[1].shape

    def score(x, t):
        per = jax.vmap(lambda w, mu, var, xm, tm: diagonal_score(w, mu, var, sde, xm, tm))
        return per(*params, x.reshape(m, draws, d), t.reshape(m, draws)).reshape(m * draws, d)

    return score


def check_scores(members: list[Member], sde, params, rng, n: int = 8) -> float:
    """Largest relative difference between :func:`diagonal_score` (padded) and
    :func:`scoresde_jax.analytic.exact_score_fn` (unpadded) over ``members`` at ``n`` random
    points and times each; raises AssertionError above 1e-8."""
    worst = 0.0
    for m, mem in enumerate(members):
        d = mem.means.shape[1]
        k_x, k_t, rng = jax.random.split(rng, 3)
        t = jax.random.uniform(k_t, (n,), jnp.float64, 1e-3, 1.0)
        x = jax.random.normal(k_x, (n, D_MAX), jnp.float64) * 2.0
        ref = exact_score_fn(mem.mixture(), sde)(x[:, :d], t)
        got = diagonal_score(*(p[m] for p in params), sde, x, t)[:, :d]
        worst = max(worst, float(jnp.max(jnp.abs(got - ref)) / jnp.max(jnp.abs(ref))))
    assert worst < 1e-8, f"diagonal score differs from analytic.exact_score_fn by {worst:.2e}"
    return worst


def candidates(methods, defaults_only: bool = False) -> list[tuple[str, str, dict]]:
    """``(method, label, options)`` of every candidate setting: each method's default (label
    ``default``) and, unless ``defaults_only``, for the multistep solvers of :data:`WIDE` the
    grids of :data:`GRIDS`, and for UniPC also ``order=3`` and ``lower_order_final=False``.
    (Each setting is one compile per budget and SDE, ~2 s on a CPU core: the list is kept short.)"""
    out = []
    for m in methods:
        out.append((m, "default", {}))
        if defaults_only or m not in WIDE:
            continue
        out += [(m, f"grid={g}", {"grid": g}) for g in GRIDS]
        if m == "unipc":
            out += [(m, "order=3", {"order": 3}), (m, "lof=0", {"lower_order_final": False})]
    return out


def modes(params, sde, x: jax.Array, t: float, draws: int) -> np.ndarray:
    """``(M, draws)``: the most probable mode of each state ``x`` (rows as :func:`batch_score`)
    under its member's marginal at time ``t`` (the largest posterior weight ``r_k``)."""
    m, _, d = params[1].shape
    per = jax.vmap(lambda w, mu, var, xm: _components(w, mu, var, sde, xm,
                                                      jnp.full((draws,), t, x.dtype))[0])
    return np.asarray(jnp.argmax(per(*params, x.reshape(m, draws, d)), -1))


class Group(NamedTuple):
    """The members of one SDE as one batch: padded ``params``, ``score``, prior draws ``x_T``, the
    reference solution ``ref`` at ``eps`` and its modes ``ref_modes (M, n)``, the mask of each
    member's real dimensions ``mask (M, 64)`` and the data stds ``stds (M,)``."""

    sde: object
    eps: float
    params: tuple
    score: object
    x_T: jax.Array
    ref: jax.Array
    ref_modes: np.ndarray
    mask: np.ndarray
    stds: np.ndarray


def flow_errors(g: Group, method: str, budget: int, opts: dict) -> dict:
    """The flow errors of ``method`` under ``budget`` evaluations (no denoising) on each member of
    ``g``: ``errors`` (RMS over draws of the per-draw RMS over the member's real dimensions, over
    its std), ``switched`` (draws that end nearest to another mode than the reference,
    :func:`modes`), ``errors_kept`` (the RMS over the other draws) and ``nfe`` (used)."""
    (m, n), d = g.ref_modes.shape, g.x_T.shape[1]
    res = samplers.sample(g.score, g.sde, g.x_T.shape, jax.random.PRNGKey(0), method=method,
                          nfe=budget, eps=g.eps, x_init=g.x_T, denoise=False, **opts)
    err = np.asarray(res.x - g.ref).reshape(m, n, d) ** 2
    per_draw = np.sqrt(np.sum(err * g.mask[:, None, :], -1) / g.mask.sum(-1)[:, None])
    per_draw = per_draw / g.stds[:, None]
    kept = modes(g.params, g.sde, res.x, g.eps, n) == g.ref_modes
    kept_ms = np.sum(per_draw**2 * kept, 1) / np.maximum(kept.sum(1), 1)
    return dict(errors=np.sqrt(np.mean(per_draw**2, axis=1)), switched=n - kept.sum(1),
                errors_kept=np.sqrt(kept_ms), nfe=int(res.nfe))


def group(members: list[Member], sde, eps: float, draws: int, rtol: float) -> Group:
    """The :class:`Group` of ``members`` (one SDE): scores checked (:func:`check_scores`), prior
    draws and the reference probability-flow solve (Tsit5, ``rtol = atol = rtol``)."""
    params = padded(members)
    check_scores(members, sde, params, jax.random.PRNGKey(3))
    score = batch_score(params, sde, draws)
    shape = (len(members) * draws, D_MAX)
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), shape, jnp.float64)
    ref = samplers.ode_sample(score, sde, shape, None, rtol=rtol, atol=rtol, eps=eps,
                              x_init=x_T, denoise=False, max_steps=100_000).x
    dims = np.array([mem.means.shape[1] for mem in members])
    mask = (np.arange(D_MAX)[None] < dims[:, None]).astype(np.float64)
    return Group(sde, eps, params, score, x_T, ref, modes(params, sde, ref, eps, draws), mask,
                 np.array([mem.std for mem in members]))


def sweep(members: list[Member], args) -> list[dict]:
    """Every candidate of :func:`candidates` at every budget of ``args.nfe`` on every member; one
    row per (method, setting, budget) with the per-member errors (all draws; and the draws that
    keep their mode), the switched draws, the worst and median errors."""
    cands = candidates(args.methods, args.defaults_only)
    rows = {}
    for sde_name, (sde, eps) in SDES.items():
        mems = [m for m in members if m.sde == sde_name]
        if not mems:
            continue
        t0 = time.perf_counter()
        g = group(mems, sde, eps, args.draws, args.rtol)
        print(f"{sde_name}: {len(mems)} members, reference solve {time.perf_counter() - t0:.1f}s",
              flush=True)
        for method, label, opts in cands:
            for budget in args.nfe + (args.default_nfe if label == "default" else []):
                try:
                    r = flow_errors(g, method, budget, opts)
                except ValueError:  # a budget below the method's one step
                    continue
                row = rows.setdefault((method, label, budget), dict(
                    method=method, setting=label, options=opts, nfe_budget=budget, nfe={},
                    errors={}, errors_kept={}, switched={}))
                row["nfe"][sde_name] = r["nfe"]
                for key in ("errors", "errors_kept", "switched"):
                    row[key].update({mem.name: round(r[key][i].item(), 6)
                                     for i, mem in enumerate(mems)})
        print(f"  {len(cands)} settings x {len(args.nfe)} budgets (defaults: "
              f"+{len(args.default_nfe)}) ({time.perf_counter() - t0:.0f}s)", flush=True)
    out = []
    for row in rows.values():
        e = row["errors"]
        worst = max(e, key=e.get)
        by_sde = {s: max(v for k, v in e.items() if k.startswith(s + "-")) for s in row["nfe"]}
        kept = row["errors_kept"]
        out.append(dict(row, worst=e[worst], worst_member=worst,
                        median=float(np.median(list(e.values()))), worst_by_sde=by_sde,
                        worst_kept=max(kept.values()), switched_total=sum(row["switched"].values()),
                        draws_total=len(e) * args.draws))
    return out


def goal_report(rows: list[dict]) -> list[dict]:
    """For each goal of :data:`GOALS`: the method whose default has the smallest worst-case flow
    error at the goal's budget, whether it meets the goal on every member, the members it misses
    (error, excess over the goal, switched draws, error over the other draws), and whether it
    meets it on the draws that keep their mode (``met_kept``)."""
    out = []
    for budget, goal in GOALS:
        cands = [r for r in rows if r["setting"] == "default" and r["nfe_budget"] == budget]
        if not cands:
            continue
        best = min(cands, key=lambda r: r["worst"])
        misses = {k: dict(error=v, over=v - goal, switched=best["switched"][k],
                          error_kept=best["errors_kept"][k])
                  for k, v in sorted(best["errors"].items()) if v > goal}
        out.append(dict(nfe_budget=budget, goal=goal, method=best["method"], worst=best["worst"],
                        worst_member=best["worst_member"], met=not misses, misses=misses,
                        worst_kept=best["worst_kept"], met_kept=best["worst_kept"] <= goal,
                        switched_total=best["switched_total"], draws_total=best["draws_total"]))
    return out


def best_settings(rows: list[dict]) -> list[dict]:
    """Per method and SDE: the setting with the smallest worst case over the goals (the largest
    ``worst / goal`` over the goal budgets, worst over the SDE's members), beside the default's."""
    out, budgets = [], dict(GOALS)
    for method in dict.fromkeys(r["method"] for r in rows):
        for sde in SDES:
            worst = {}  # setting -> {budget: worst over the SDE's members}
            for r in (r for r in rows if r["method"] == method and r["nfe_budget"] in budgets):
                if sde in r["worst_by_sde"]:
                    worst.setdefault(r["setting"], {})[r["nfe_budget"]] = r["worst_by_sde"][sde]
            ratio = {k: max(v[b] / g for b, g in GOALS) for k, v in worst.items()
                     if len(v) == len(GOALS)}
            if ratio:
                best = min(ratio, key=ratio.get)
                out.append(dict(method=method, sde=sde, best=best, best_worst=worst[best],
                                default_worst=worst.get("default")))
    return out


def plot(rows: list[dict], path: str) -> None:
    """Flow error against NFE of each method's default: the worst member (solid) and the worst
    member over the draws that keep their mode (dashed); the median member."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for i, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        rs = sorted((r for r in rows if r["method"] == method and r["setting"] == "default"),
                    key=lambda r: r["nfe_budget"])
        nfe, c = [r["nfe_budget"] for r in rs], f"C{i}"
        axes[0].plot(nfe, [r["worst"] for r in rs], "o-", color=c, label=method)
        axes[0].plot(nfe, [r["worst_kept"] for r in rs], "o--", color=c, ms=3)
        axes[1].plot(nfe, [r["median"] for r in rs], "o-", color=c, label=method)
    for ax, title in zip(axes, ("worst member (dashed: draws that keep their mode)",
                                "median member")):
        ax.plot([b for b, _ in GOALS], [g for _, g in GOALS], "k*", ms=10, label="goal")
        ax.set(xscale="log", yscale="log", xlabel="NFE budget")
        ticks = sorted({r["nfe_budget"] for r in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("flow error / data std")
    axes[1].legend(fontsize=7)
    fig.suptitle("defaults over the mixture family (VP, sub-VP, VE; exact scores)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(rows: list[dict], budgets=(10, 20)) -> str:
    """Markdown table per method and setting at each of ``budgets``: the worst and median member's
    flow error, the worst member's error over the draws that keep their mode, and the draws that
    switch mode (of all members' draws)."""
    head = " | ".join(f"worst @{b} | median @{b} | worst kept @{b} | switched @{b}"
                      for b in budgets)
    lines = [f"| method | setting | {head} |", "|---|---|" + "---|" * (4 * len(budgets))]
    for method, setting in dict.fromkeys((r["method"], r["setting"]) for r in rows):
        by = {r["nfe_budget"]: r for r in rows if (r["method"], r["setting"]) == (method, setting)}
        cells = " | ".join(
            f"{by[b]['worst']:.4f} | {by[b]['median']:.4f} | {by[b]['worst_kept']:.4f} | "
            f"{by[b]['switched_total']}/{by[b]['draws_total']}" if b in by else "- | - | - | -"
            for b in budgets)
        lines.append(f"| {method} | {setting} | {cells} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=30)
    p.add_argument("--draws", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 15, 20])
    p.add_argument("--default_nfe", type=int, nargs="*", default=[40],
                   help="further budgets for the defaults only")
    p.add_argument("--methods", nargs="+", default=list(DETERMINISTIC))
    p.add_argument("--defaults_only", action="store_true", help="each method's default only")
    p.add_argument("--rtol", type=float, default=1e-9, help="of the reference solve (and atol)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny run: by default 3 members (one per SDE), 16 draws, NFE 10 and 20, "
                        "UniPC and DPM-Solver++(2M), defaults only")
    p.add_argument("--out", default=os.path.join(RESULTS, "bench_sampler_family.json"))
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        p.set_defaults(members=3, draws=16, nfe=[10, 20], methods=["unipc", "dpm_solver_pp"],
                       defaults_only=True, default_nfe=[])
    args = p.parse_args(argv)
    dev = jax.devices()[0]
    meta = dict(jax=jax.__version__, backend=dev.platform, device=dev.device_kind,
                python=platform.python_version(), cpu_count=os.cpu_count(),
                load_avg=os.getloadavg()[0], time=time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                members=args.members, draws=args.draws, seed=args.seed, nfe=args.nfe,
                default_nfe=args.default_nfe,
                reference_rtol=args.rtol,
                goals=[dict(nfe_budget=b, flow_error=g) for b, g in GOALS],
                sdes={k: dict(sde=repr(s), eps=e) for k, (s, e) in SDES.items()})
    print(f"jax {jax.__version__} on {dev.platform}: {args.members} members, {args.draws} draws")
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        members = family(args.members, args.seed)
        rows = sweep(members, args)
    meta["seconds"] = round(time.perf_counter() - t0, 1)
    print("\n" + table(rows))
    goals = goal_report(rows)
    for g in goals:
        status = "met" if g["met"] else f"NOT met on {len(g['misses'])} members"
        print(f"goal NFE <= {g['nfe_budget']}: flow error <= {g['goal']} on every member: best "
              f"default {g['method']} worst {g['worst']:.4f} ({g['worst_member']}): {status}; "
              f"over the draws that keep their mode: worst {g['worst_kept']:.4f} "
              f"({'met' if g['met_kept'] else 'NOT met'}; {g['switched_total']} of "
              f"{g['draws_total']} draws switch)")
    best = best_settings(rows)
    for b in best:
        print(f"  {b['method']:18s} {b['sde']:6s} best by worst case: {b['best']} "
              f"{b['best_worst']} (default {b['default_worst']})")
    fam = [dict(name=m.name, sde=m.sde, dim=m.means.shape[1], modes=m.means.shape[0],
                std_range=np.sqrt([m.variances.min(), m.variances.max()]).tolist(),
                data_std=m.std) for m in members]
    result = dict(meta=meta, family=fam, rows=rows, goals=goals, best_settings=best)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    png = os.path.splitext(args.out)[0] + ".png"
    plot(rows, png)
    print(f"\nwrote {args.out} and {png} ({meta['seconds']:.0f}s)")
    return result


if __name__ == "__main__":
    main()
