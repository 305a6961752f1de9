"""Prediction intervals (megacluster.uncertainty): family key, the conformal band, coverage, widening with
distance, the generated residual table, and the interval fields of estimate / plan / campaign / validate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cli_helpers import run_cli
from megacluster import catalog, uncertainty as u
from megacluster.cluster import make_cluster
from megacluster.estimate import estimate
from megacluster.specs import Layout, StackSpec
from megacluster.validate import load_runs


# ------------------------------------------------------------------------------------------------ family key
def test_family_key_is_the_source_document():
    a = {"id": "a", "source": {"title": "Smith et al. 2022, A Paper (arXiv:1)", "locator": "Table 1"}}
    b = {"id": "b", "source": {"title": "Smith  et al. 2022, a paper", "locator": "Table 5, row 2"}}
    c = {"id": "c", "source": {"title": "Jones et al. 2023, Another Paper", "locator": "Table 1"}}
    assert u.family_key(a) == u.family_key(b) == "smith et al. 2022, a paper"
    assert u.family_key(c) != u.family_key(a)
    assert u.family_key({"id": "d", "source": {"locator": "org/repo: bench.md (table 2)"}}) == "org/repo: bench.md"
    assert u.family_key({"id": "e-1b"}) == "e"


def test_catalog_families_group_one_sources_runs():
    runs = load_runs("published") + load_runs("more")
    fam = {r["id"]: u.family_key(r) for r in runs}
    mpt = {fam[i] for i in fam if i.startswith("mpt-")}
    megatron21 = {fam[i] for i in fam if i.startswith("megatron21-")}
    assert len(mpt) == 1 and len(megatron21) == 1 and mpt != megatron21
    assert fam["mlperf-v31-gpt3-175b-8192gpu"] != fam["mlperf-v40-gpt3-175b-512gpu"]   # two rounds, two sources
    assert len(set(fam.values())) >= 15


# ------------------------------------------------------------------------------------------------ the band
def _by_run(residuals):
    """Each residual its own family: the plain (run-weighted) conformal edges."""
    return u.family_conformal_edges(residuals, [f"f{i}" for i in range(len(residuals))])


def test_conformal_edges_are_the_finite_sample_order_statistics():
    r = np.arange(1.0, 20.0)             # n = 19: floor(20 x 0.1) = 2nd, ceil(20 x 0.9) = 18th
    assert _by_run(r[::-1]) == (2.0, 18.0)
    assert _by_run([0.3, -0.1, 0.2]) == (-0.1, 0.3)    # too few runs: the extremes
    with pytest.raises(ValueError):
        _by_run([])


def _rows(residuals_by_family, **over):
    """Synthetic residual rows: one family per list, all alike (hopper, megatron, 1024 GPUs, 70B, 8K)."""
    rows = []
    for f, res in enumerate(residuals_by_family):
        for i, r in enumerate(res):
            rows.append({"id": f"f{f}-{i}", "set": "more", "family": f"fam{f}", "generation": "hopper",
                         "stack": "megatron", "n_gpus": 1024, "params": 7e10, "seq_len": 8192, "cp": False,
                         "moe": False, "fp8": False, "unknown_framework": False, "residual": float(r), **over})
    return rows


FEAT = u.Features(generation="hopper", stack="megatron", n_gpus=1024, params=7e10, seq_len=8192)


def test_family_conformal_edges_weigh_each_source_the_same():
    """A big family's many runs count as one source: its 30 runs at 0 and 9 sources at 1..9 give a band over
    the sources (1/10 each), not one pulled to 0 by the runs."""
    res = [0.0] * 30 + list(range(1, 10))
    fam = ["big"] * 30 + [f"s{i}" for i in range(9)]
    assert u.family_conformal_edges(res, fam) == (0.0, 9.0)         # 10 sources: p 1/11 and 10/11
    assert _by_run(res)[1] == 6.0                                    # by run, the top edge is 6
    assert u.family_conformal_edges([0.1, -0.2, 0.3], ["a", "a", "b"]) == (-0.2, 0.3)   # two sources: the range
    with pytest.raises(ValueError):
        u.family_conformal_edges([0.1, 0.2], ["a"])                  # a family name for each residual


def test_coverage_of_exchangeable_residuals_is_near_the_level():
    rng = np.random.default_rng(0)
    rows = _rows([rng.normal(0.05, 0.1, 10) for _ in range(30)])
    c = u.loo_coverage(rows)["more"]
    assert c["n"] == 300
    assert 0.74 <= c["coverage"] <= 0.90         # 80% nominal; the band is stretched to contain 0
    # coverage is the share inside the own leave-family-out band, recomputed by hand
    inside = []
    for r in rows:
        b = u.band(FEAT, rows, exclude_family=r["family"])
        inside.append(b.lo <= r["residual"] <= b.hi)
    assert c["coverage"] == pytest.approx(np.mean(inside))


def test_coverage_counts_runs_inside():
    assert u.coverage([True, False, True, True]) == 0.75
    assert math.isnan(u.coverage([]))


def test_leaving_a_family_out_removes_its_runs():
    rows = _rows([[0.0] * 10, [0.0] * 10, [0.9] * 10])
    assert u.band(FEAT, rows).hi == pytest.approx(0.9)                      # the outlying family is in the pool
    assert u.band(FEAT, rows, exclude_family="fam2").hi == pytest.approx(0.0)


@pytest.mark.parametrize("n_gpus,cp,gen", [(8, False, "hopper"), (16384, True, "hopper"), (512, False, "ampere"),
                                           (100000, False, "blackwell")])
def test_intervals_contain_the_point(n_gpus, cp, gen):
    b = u.band(u.Features(generation=gen, stack="megatron", n_gpus=n_gpus, params=7e10, seq_len=8192, cp=cp))
    assert b.lo <= 0.0 <= b.hi and b.hi > b.lo
    lo, hi = b.rate(1234.5)
    assert lo <= 1234.5 <= hi
    lo, hi = b.time(2.5)
    assert lo <= 2.5 <= hi


def test_intervals_widen_with_distance_from_validated_runs():
    rows = _rows([np.linspace(-0.1, 0.2, 10), np.linspace(-0.15, 0.25, 10)])
    near = u.band(FEAT, rows)
    assert near.widen == 1.0 and near.rare == ()
    far_scale = u.band(u.Features(**{**FEAT.__dict__, "n_gpus": 1024 * 16}), rows)     # 4 octaves out
    assert far_scale.widen == pytest.approx(1 + 4 * u.WIDEN_PER_OCTAVE)
    assert far_scale.hi - far_scale.lo > near.hi - near.lo
    rare_cp = u.band(u.Features(**{**FEAT.__dict__, "cp": True}), rows)               # no run in the pool has CP
    assert rare_cp.widen == pytest.approx(1 + u.WIDEN_PER_FEATURE) and "cp" in rare_cp.rare
    # with enough CP runs in the pool the feature is no longer rare
    with_cp = rows + _rows([[0.0] * 6], cp=True)
    assert u.band(u.Features(**{**FEAT.__dict__, "cp": True}), with_cp).widen == 1.0


def test_widening_rate_is_the_smallest_that_covers_the_rare_runs():
    """fit_widen_per_feature: 80% of the runs with a rare feature must lie in their leave-family-out bands; the
    rate is the smallest grid step that does it, and a bigger miss on the rare runs needs a bigger rate."""
    plain = _rows([[x] for x in np.linspace(-0.1, 0.1, 60)])     # 60 sources, so 4 others weigh little
    # five CP runs from five sources (each one rare once its own family is left out), 0.15 above the others' band
    rare = [dict(r, id=f"cp{i}", family=f"cpfam{i}", cp=True) for i, r in enumerate(_rows([[0.15]] * 5))]
    rate = u.fit_widen_per_feature(plain + rare)
    assert rate in u.WIDEN_GRID and 0.0 < rate < 1.0
    below = [x for x in u.WIDEN_GRID if x < rate][-1]
    bands = [u.band(u.Features(**{**FEAT.__dict__, "cp": True}), plain + rare, exclude_family=f"cpfam{i}",
                    per_feature=r) for i in range(5) for r in (rate, below)]
    assert all(b.hi >= 0.15 for b in bands[0::2]) and not all(b.hi >= 0.15 for b in bands[1::2])
    further = [dict(r, residual=0.25) for r in rare]
    assert u.fit_widen_per_feature(plain + further) > rate
    assert u.fit_widen_per_feature(plain) == 0.0                       # nothing rare: nothing to widen


def test_widening_rate_weighs_each_family_the_same():
    """A big family whose rare-stack runs happen to be well predicted does not set the rate alone: four other
    sources, each on a stack of its own and missed by 0.15, must be covered too."""
    plain = _rows([[x] for x in np.linspace(-0.1, 0.1, 60)])
    big = [dict(r, id=f"big{i}", family="big", stack="s-big") for i, r in enumerate(_rows([[0.0] * 20]))]
    small = [dict(r, id=f"s{i}", family=f"small{i}", stack=f"s-{i}") for i, r in enumerate(_rows([[0.15]] * 4))]
    assert u.fit_widen_per_feature(plain + big + small) >= 0.5          # 0.1 x (1 + r) must reach 0.15
    assert u.fit_widen_per_feature(plain + big) == 0.0


def test_the_catalog_table_carries_its_calibrated_rate():
    rows = list(u.residual_table())
    assert u.widen_per_feature() == u.fit_widen_per_feature(rows)
    run = next(r for r in rows if r["cp"])
    b = u.band(u._row_features(run))                                      # the table's own rate by default
    assert b.widen == pytest.approx(1 + u.widen_per_feature() * sum(not x.startswith(u.AXES) for x in b.rare)
                                    + u.WIDEN_PER_OCTAVE * sum(float(x.split()[1]) for x in b.rare
                                                               if x.startswith(u.AXES)), rel=0.02)


def test_groups_fall_back_to_generation_then_all():
    rows = _rows([[0.1] * 6, [0.1] * 6]) + _rows([[-0.3] * 12, [0.3] * 12], stack="torchtitan", generation="ampere")
    assert u.band(FEAT, rows).group == "hopper/megatron"
    assert u.band(u.Features(**{**FEAT.__dict__, "stack": "deepspeed"}), rows).group == "hopper"
    assert u.band(u.Features(**{**FEAT.__dict__, "generation": "volta"}), rows).group == "all"


# ------------------------------------------------------------------------------------------------ the table
def test_residual_table_is_up_to_date_with_the_step_model():
    """Fails when the step model or the runs changed since benchmarks/residuals.py last ran: run it."""
    stored = {(r["set"], r["id"]): r for r in u.residual_table()}
    fresh = {(r["set"], r["id"]): r for r in u.residual_rows()}
    hint = "residual table is stale: run `PYTHONPATH=src python benchmarks/residuals.py`"
    assert stored.keys() == fresh.keys(), hint
    for k, r in fresh.items():
        s = stored[k]
        assert abs(s["residual"] - r["residual"]) < 1e-4, f"{hint} ({k[1]})"
        assert {f: s[f] for f in u.Features.__dataclass_fields__} == \
            {f: r[f] for f in u.Features.__dataclass_fields__} and s["family"] == r["family"], f"{hint} ({k[1]})"


# ------------------------------------------------------------------------------------------------ CLI outputs
def _finite_pair(v):
    return isinstance(v, list) and len(v) == 2 and all(math.isfinite(x) for x in v) and v[0] <= v[1]


def test_estimate_json_has_finite_intervals_around_each_value(capsys):
    code, out, err = run_cli(capsys, "estimate", "-m", "llama3.1-70b", "-g", "h100-sxm", "-n", "64", "--tp", "8",
                             "--global-batch", "64", "--json")
    assert code == 0, err
    d = json.loads(out)
    for k in ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "tflops_per_gpu"):
        iv = d[f"{k}_interval"]
        assert _finite_pair(iv) and iv[0] <= d[k] <= iv[1], k
    assert d["interval_basis"]["level"] == 0.8 and d["interval_basis"]["runs"] >= u.MIN_GROUP_RUNS


def test_estimate_table_prints_the_interval(capsys):
    code, out, _ = run_cli(capsys, "estimate", "-m", "llama3.1-70b", "-g", "h100-sxm", "-n", "64", "--tp", "8",
                           "--global-batch", "64")
    assert code == 0 and "(80%:" in out and "cross-validated error" in out


def test_plan_json_has_intervals_for_best_top_and_sweep(capsys):
    code, out, err = run_cli(capsys, "plan", "-m", "llama3.1-8b", "-g", "h100-sxm", "-n", "64", "--top", "2",
                             "--json")
    assert code == 0, err
    d = json.loads(out)
    for row in [d["best"], *d["top"]]:
        for k in ("step_time_s", "mfu", "tokens_per_s_per_gpu"):
            assert _finite_pair(row[f"{k}_interval"]) and row[f"{k}_interval"][0] <= row[k] <= row[f"{k}_interval"][1]
    code, out, err = run_cli(capsys, "plan", "-m", "llama3.1-8b", "-g", "h100-sxm", "--sweep-gpus", "64,262144",
                             "--global-batch", "262144", "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    for row in rows:
        assert _finite_pair(row["days_per_trillion_tokens_interval"]) and _finite_pair(row["mfu_interval"])
    widths = [math.log(r["days_per_trillion_tokens_interval"][1] / r["days_per_trillion_tokens_interval"][0])
              for r in rows]
    assert widths[1] > widths[0]                 # 262,144 GPUs: 4 octaves beyond any validated run


def test_campaign_json_has_intervals_of_days_and_mfu(capsys):
    code, out, err = run_cli(capsys, "campaign", "--scenario", "xai-colossus-100k", "--json")
    assert code == 0, err
    d = json.loads(out)
    for k in ("days", "days_failure_free", "step_time_s", "mfu", "tokens_per_s"):
        assert _finite_pair(d[f"{k}_interval"]) and d[f"{k}_interval"][0] <= d[k] <= d[f"{k}_interval"][1], k


def test_validate_reports_each_runs_interval_and_coverage(capsys):
    code, out, err = run_cli(capsys, "validate", "--runs", "more", "--json")
    assert code == 0, err
    d = json.loads(out)
    inside = []
    for r in d["runs"]:
        lo, hi = r["interval"]
        assert _finite_pair(r["interval"]) and lo <= r["predicted"] <= hi
        assert r["inside"] == (lo <= r["reference"] <= hi)
        inside.append(r["inside"])
    assert d["coverage"] == pytest.approx(np.mean(inside))
    assert d["coverage_by_group"]["all"]["n"] == len(d["runs"])
    assert 0 < d["median_half_width"] < 1
    code, out, _ = run_cli(capsys, "validate")
    assert code == 0 and "in 80% interval" in out


def test_validated_run_interval_excludes_its_own_family():
    """The interval validate gives a run is drawn from other sources' runs only."""
    from megacluster.validate import validate_runs

    run = next(r for r in load_runs("more") if r["id"] == "mpt-7b-h100-sxm-8gpu-s2048")
    basis = validate_runs([run])["intervals"]["by_run"][run["id"]]["basis"]
    assert basis["group"] == "hopper"          # no other source ran MosaicML's stack: the generation's runs
    rows = u.residual_table()
    hopper = [r for r in rows if r["generation"] == "hopper"]
    others = [r for r in hopper if r["family"] != u.family_key(run)]
    assert basis["runs"] == len(others) < len(hopper)


def test_estimate_intervals_follow_the_stack_and_gpu():
    m = catalog.model("llama3.1-8b")
    c = make_cluster("h100-sxm", 8)
    est = estimate(m, c, Layout(dp=8, global_batch=32, seq_len=8192, zero=3), StackSpec(framework="torchtitan"))
    iv = u.estimate_intervals(est, m, c.gpu)
    assert iv["basis"]["group"].startswith("hopper")
    assert iv["step_time_s"][0] <= est.step_time_s <= iv["step_time_s"][1]


def test_stack_aliases_draw_from_the_same_runs():
    m = catalog.model("llama3.1-70b")
    c = make_cluster("h100-sxm", 64)
    L = Layout(tp=8, dp=8, global_batch=64, seq_len=8192)
    f_alias = u.features(m, c.gpu, L, StackSpec(framework="nemo"))
    assert f_alias == u.features(m, c.gpu, L, StackSpec(framework="megatron")) and f_alias.stack == "megatron"


def test_campaign_with_pinned_mfu_has_no_interval(capsys):
    code, out, err = run_cli(capsys, "campaign", "--scenario", "xai-colossus-100k", "--mfu", "0.3", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["intervals"] == {} and not any(k.endswith("_interval") for k in d)


def test_a_missing_residual_table_is_one_line(monkeypatch, tmp_path, capsys):
    bad = tmp_path / "residuals.json"
    bad.write_text("{not json")
    monkeypatch.setattr(u, "residual_path", lambda: bad)
    u.clear_table_cache()
    try:
        code, out, err = run_cli(capsys, "estimate", "-m", "llama3.1-8b", "-g", "h100-sxm", "-n", "8", "--zero", "3",
                                 "--global-batch", "32")
        assert code == 2 and "residual table" in err and "benchmarks/residuals.py" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        u.clear_table_cache()


@pytest.mark.parametrize("rate", ['"0.3"', "-1", "1e9", "true", "null"])
def test_a_malformed_widening_rate_is_one_line(monkeypatch, tmp_path, capsys, rate):
    table = json.loads(u.residual_path().read_text(encoding="utf-8"))
    bad = tmp_path / "residuals.json"
    bad.write_text(json.dumps({**table, "widen_per_feature": json.loads(rate)}))
    monkeypatch.setattr(u, "residual_path", lambda: bad)
    u.clear_table_cache()
    try:
        code, out, err = run_cli(capsys, "validate", "--runs", "more")
        assert code == 2 and "widen_per_feature" in err and len(err.strip().splitlines()) == 1
    finally:
        u.clear_table_cache()


def test_nested_coverage_refits_the_rate_without_each_family():
    """The nested figure refits the widening rate per left-out family: with a big well-predicted family that
    alone keeps the rate low, the small families' runs get wider bands than in the plain figure."""
    plain = _rows([np.linspace(-0.1, 0.1, 30), np.linspace(-0.1, 0.1, 30)])
    big = [dict(r, id=f"big{i}", family="big", stack="s-big") for i, r in enumerate(_rows([[0.0] * 20]))]
    small = [dict(r, id=f"s{i}", family=f"small{i}", stack=f"s-{i}") for i, r in enumerate(_rows([[0.15]] * 4))]
    rows = plain + big + small
    flat, nested = u.loo_coverage(rows), u.nested_loo_coverage(rows)
    assert set(flat) == set(nested) == {"more", "all"} and nested["all"]["n"] == len(rows)
    assert 0.0 <= nested["all"]["coverage"] <= 1.0 and nested["all"]["median_half_width"] > 0
