"""Issue 24: the sampler-family benchmark (``benchmarks/bench_sampler_family.py``) on a tiny
family: its ``--quick`` path on two members writes the JSON and plot with the fields the README
table and the goal check read; the family is seeded, and the padded diagonal score that the sweep
uses agrees with :func:`scoresde_jax.analytic.exact_score_fn`."""

from __future__ import annotations

import json

import jax
import numpy as np

from benchmarks import bench_sampler_family as fam
from scoresde_jax.sde import VESDE


def test_family_is_seeded_and_spans_the_ranges():
    a, b = fam.family(12, seed=0), fam.family(12, seed=0)
    assert [m.name for m in a] == [m.name for m in b]
    assert all(np.array_equal(x.means, y.means) for x, y in zip(a, b))
    assert {m.sde for m in a} == set(fam.SDES)
    for m in a:
        k, d = m.means.shape
        assert 2 <= d <= fam.D_MAX and 2 <= k <= fam.K_MAX
        assert 0.05 - 1e-12 <= np.sqrt(m.variances).min() <= np.sqrt(m.variances).max() <= 0.5
        assert np.isclose(m.weights.sum(), 1.0)


def test_padded_diagonal_score_matches_the_analytic_score():
    with jax.enable_x64(True):
        members = [m for m in fam.family(6, seed=1) if m.sde == "ve"][:1]
        params = fam.padded(members)
        assert fam.check_scores(members, VESDE(), params, jax.random.PRNGKey(0)) < 1e-8


def test_quick_run_writes_json_and_plot(tmp_path):
    """The ``--quick`` path on one member (VP), one method and budget: a few compiles."""
    out = tmp_path / "family.json"
    fam.main(["--quick", "--members", "1", "--nfe", "10", "--methods", "unipc", "--rtol", "1e-6",
              "--out", str(out)])
    res = json.loads(out.read_text())
    assert (tmp_path / "family.png").stat().st_size > 0
    (member,) = res["family"]
    assert member["sde"] == "vp" and member["dim"] == 64 and member["modes"] == 20
    (row,) = res["rows"]
    assert row["method"] == "unipc" and row["setting"] == "default" and row["nfe_budget"] == 10
    assert set(row["errors"]) == set(row["errors_kept"]) == set(row["switched"]) == {
        member["name"]}
    assert 0 <= row["errors_kept"][member["name"]] < 1 and 0 <= row["errors"][member["name"]] < 1
    assert 0 <= row["switched_total"] <= row["draws_total"] == 16
    assert row["worst"] == max(row["errors"].values()) and row["worst"] >= row["median"]
    assert row["nfe"] == {"vp": 10}
    (goal,) = res["goals"]  # only the 10-NFE goal has rows
    assert goal["method"] == "unipc" and goal["goal"] == 0.061
    assert goal["met"] == (row["worst"] <= 0.061)
    assert res["meta"]["draws"] == 16 and res["meta"]["reference_rtol"] == 1e-6
