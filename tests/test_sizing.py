"""`megacluster size` (issue 19): the inverse problem, its limits, its bad input, and the sizing scenarios."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from megacluster import catalog
from megacluster.errors import UserError
from megacluster.sizing import grid, per_gpu_limits, size


def test_grid_is_whole_nodes_eight_per_doubling():
    g = grid(8, 1024, 8)
    assert g[:3] == [8, 16, 24] and all(n % 8 == 0 for n in g) and g[-1] == 1024
    assert len([n for n in g if 512 <= n < 1024]) == 8


def test_power_and_capex_per_gpu_are_the_campaigns():
    from megacluster.campaign.campaign import run_campaign
    from megacluster.cluster import make_cluster

    mw, usd = per_gpu_limits(catalog.gpu("h100-sxm"), "us-average")
    r = run_campaign("llama3.1-8b", 1e11, make_cluster("h100-sxm", 64), reliability=False)
    assert r.peak_facility_mw == pytest.approx(64 * mw) and r.capex_usd == pytest.approx(64 * usd)


def test_smallest_cluster_meets_the_deadline_and_the_next_smaller_does_not():
    r = size("llama3.1-8b", 1e12, "h100-sxm", days=20, trials=20)
    assert r.question == "smallest cluster" and r.binding == "days" and r.feasible
    assert r.days <= 20
    smaller = [o for o in r.options if o.n_gpus < r.n_gpus]
    assert smaller and all(o.days > 20 for o in smaller)
    d = r.to_dict()
    for key in ("n_gpus", "layout", "days", "peak_facility_mw", "cost_usd", "binding", "interval"):
        assert key in d
    lo, hi = d["interval"]["days"]
    assert lo <= d["days"] <= hi and "cross-validated error" in d["interval_note"]
    json.dumps(d)


def test_power_limit_binds_when_the_deadline_cannot_be_met():
    mw, _ = per_gpu_limits(catalog.gpu("h100-sxm"), "us-average")
    r = size("llama3.1-8b", 1e12, "h100-sxm", days=2, max_mw=64 * mw * 1.001, trials=20)
    assert not r.feasible and r.binding == "max_mw" and r.n_gpus <= 64
    assert r.peak_facility_mw <= 64 * mw * 1.001


def test_largest_model_for_a_cluster_and_deadline():
    r = size(None, None, "h100-sxm", days=10, gpus=256, trials=20)
    assert r.question == "largest model" and r.binding == "gpus" and r.n_gpus == 256
    assert r.days <= 10 and r.tokens / r.params_total == pytest.approx(20, rel=0.05)
    assert "Hoffmann" in r.scaling_law


def test_compute_budget_picks_the_model_by_the_law():
    r = size(compute_flops=1e23, gpu="h100-sxm", days=30, law="llama3", trials=20)
    assert r.training_flops == pytest.approx(1e23, rel=0.01) and "0.299 C^0.537" in r.scaling_law


@pytest.mark.parametrize("kw, msg", [
    (dict(model="llama3.1-8b", tokens=1e12), "say what limits the cluster"),
    (dict(model="llama3.1-8b", tokens=1e12, days=-1), "--days must be positive, got -1"),
    (dict(model="llama3.1-8b", compute_flops=1e23, days=3), "a model or a compute budget"),
    (dict(gpus=64), "--days is needed"),
    (dict(model="llama3.1-8b", tokens=1e12, days=3, precision="fp4"), "--precision must be"),
    (dict(compute_flops=1e23, days=3, law="kaplan"), "unknown scaling law"),
    (dict(model="llama3.1-8b", tokens=1e12, max_mw=1e-6), "less than one"),
    (dict(model="llama3.1-8b", tokens="15.6T", days=3), "--tokens must be a number, got .15.6T."),
])
def test_bad_input_raises_one_line(kw, msg):
    with pytest.raises(UserError, match=msg):
        size(**{"gpu": "h100-sxm", **kw})


@pytest.mark.parametrize("argv, msg", [
    (["size", "--model", "llama3.1-8b", "--tokens", "1T"], "say what limits the cluster"),
    (["size", "--model", "llama3.1-8b", "--tokens", "lots", "--days", "3"], "--tokens: cannot read"),
    (["size", "--scenario", "xai-colossus-100k"], "megacluster campaign --scenario xai-colossus-100k"),
    (["size", "--scenario", "stargate-100b", "--days", "3"], "--scenario fixes"),
    (["campaign", "--scenario", "nope"], "megacluster catalog scenarios"),
])
def test_cli_bad_input_is_one_line_exit_2(argv, msg, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1 and out == ""


def test_cli_json_answer(capsys):
    code, out, _ = run_cli(capsys, "size", "--model", "llama3.1-8b", "--tokens", "500B", "--days", "10",
                           "--trials", "20", "--json")
    d = json.loads(out)
    assert code == 0 and d["binding"] == "days" and d["days"] <= 10 and d["n_gpus"] % 8 == 0


def test_catalog_lists_scenarios_and_sites(capsys):
    code, out, _ = run_cli(capsys, "catalog", "scenarios")
    assert code == 0
    for sid in ("xai-colossus-100k", "stargate-100b", "tesla-35k-month", "xai-grok2-20k", "meta-llama4-100k"):
        assert sid in out
    code, out, _ = run_cli(capsys, "catalog", "sites")
    assert code == 0 and "memphis-tn" in out and "hyperscale-liquid-cooled" in out


def test_every_scenario_has_sources():
    for sc in catalog.load("scenarios")["scenarios"]:
        if "size" in sc:
            z = sc["size"]
            assert all(len(str(z[k]["source"])) > 20 for k in ("days", "max_mw", "budget_usd", "gpus") if k in z)
        else:
            assert len(sc["cluster_source"]) > 20
        for p in (sc.get("published") or {}).values():
            assert len(str(p["source"])) > 10


def test_interval_comes_from_the_campaign_when_it_carries_one():
    from types import SimpleNamespace

    from megacluster.sizing import _interval

    iv, note = _interval(SimpleNamespace(intervals={"days": [50.0, 70.0], "tokens_per_s": [1.0, 2.0]},
                                         interval_basis={"group": "hopper/megatron", "runs": 28, "families": 9,
                                                         "widen": 1.0, "far_from_validated": []}))
    assert iv == {"days": [50.0, 70.0]} and "28 published runs on hopper/megatron" in note
    iv, note = _interval(SimpleNamespace())
    assert iv is None and "--mfu" in note


def test_size_writes_the_answers_campaign_as_html(capsys, tmp_path):
    out = tmp_path / "size.html"
    code, _, err = run_cli(capsys, "size", "--model", "llama3.1-8b", "--tokens", "1T", "--days", "20", "--trials",
                           "20", "--html", str(out))
    assert code == 0, err
    text = out.read_text()
    assert "megacluster size" in text and "plotly" in text.lower()


@pytest.mark.parametrize("args, message", [
    (["--days", "1e9"], "at most 36,500 (100 years of training)"),
    (["--days", "30", "--gpus", "99999999999999999999"], "--gpus 99999999999999999999 is more than megacluster accepts"),
    (["--days", "nan"], "--days must be a finite number"),
    (["--days", "30", "--max-mw", "-1"], "--max-mw must be positive"),
])
def test_size_refuses_limits_no_system_could_have(capsys, args, message):
    code, out, err = run_cli(capsys, "size", "--model", "llama3.1-8b", "--tokens", "1T", *args)
    assert code == 2 and err.count("error:") == 1 and message in err and "Traceback" not in err
