"""Plan files: a saved plan reads back to the same model, cluster, layout and stack; malformed or inconsistent
files are one-line UserErrors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.errors import UserError
from megacluster.estimate import estimate
from megacluster.plan_file import Plan, load_plan, save_plan
from megacluster.search import search
from megacluster.specs import Layout, StackSpec

HF = Path(__file__).parent / "data" / "hf"


def _good(tmp_path: Path) -> tuple[Path, dict]:
    cluster = make_cluster("h100-sxm", 16384, fabric="roce")
    layout = Layout(tp=8, pp=16, dp=128, global_batch=2048, seq_len=8192, recompute="none", zero=3)
    stack = StackSpec(framework="meta-internal")
    p = save_plan(tmp_path / "plan.yaml", "llama3.1-405b", cluster, layout, stack)
    return p, yaml.safe_load(p.read_text())


def test_round_trip(tmp_path):
    cluster = make_cluster("a100-80gb", 384, fabric="infiniband", nic_gbps=100, nics_per_node=4)
    model = catalog.model("bloom-176b")
    layout = Layout(tp=4, pp=12, dp=8, micro_batch=2, global_batch=2048, seq_len=2048, recompute="full", zero=1)
    stack = StackSpec(framework="deepspeed")
    est = estimate(model, cluster, layout, stack)
    p = save_plan(tmp_path / "bloom.yaml", "bloom-176b", cluster, layout, stack, estimate=est)
    plan = load_plan(p)
    assert isinstance(plan, Plan)
    assert plan.model == model and plan.model_name == "bloom-176b"
    assert plan.cluster == cluster and plan.layout == layout and plan.stack == stack
    # the plan predicts the same step
    assert estimate(plan.model, plan.cluster, plan.layout, plan.stack).step_time_s == est.step_time_s
    text = p.read_text()
    assert "predicted:" in text and "step_time_s" in text


def test_search_result_round_trip(tmp_path):
    model, cluster = catalog.model("llama3.1-70b"), make_cluster("h200", 256)
    best = search(model, cluster, global_batch=512, top=1).best
    p = save_plan(tmp_path / "p.yaml", "llama3.1-70b", cluster, best.layout, best.stack, best)
    plan = load_plan(p)
    assert plan.layout == best.layout and plan.cluster == cluster


def test_json_and_model_path_relative_to_the_plan(tmp_path):
    shutil.copy(HF / "Llama-3.1-8B" / "config.json", tmp_path / "config.json")
    model = catalog.model(str(tmp_path / "config.json"))
    heads = model.n_heads
    tp = 2 if heads % 2 == 0 else 1
    d = {"model": "./config.json", "gpu": "h100-sxm", "gpus": 8,
         "layout": {"tp": tp, "dp": 8 // tp, "global_batch": 16, "seq_len": 1024}}
    (tmp_path / "plan.json").write_text(json.dumps(d))
    plan = load_plan(tmp_path / "plan.json")
    assert plan.model == model
    assert plan.cluster.fabric.id == "infiniband"          # defaults of make_cluster
    assert plan.stack == StackSpec()


@pytest.mark.parametrize("edit,msg", [
    (lambda d: "just text", "expected a mapping"),
    (lambda d: {**d, "colour": "red"}, "unknown key 'colour'"),
    (lambda d: {k: v for k, v in d.items() if k != "layout"}, "missing 'layout'"),
    (lambda d: {**d, "model": "llama9-1t"}, "unknown model"),
    (lambda d: {**d, "model": 7}, "model: expected"),
    (lambda d: {**d, "gpu": "h900"}, "unknown GPU"),
    (lambda d: {**d, "gpus": -4}, "gpus: expected a positive"),
    (lambda d: {**d, "gpus": True}, "gpus: expected a positive"),
    (lambda d: {**d, "nic_gbps": "fast"}, "nic_gbps"),
    (lambda d: {**d, "fabric": "carrier-pigeon"}, "unknown fabric"),
    (lambda d: {**d, "layout": [8, 16]}, "layout: expected a mapping"),
    (lambda d: {**d, "layout": {**d["layout"], "tp": 0}}, "layout: tp"),
    (lambda d: {**d, "layout": {**d["layout"], "recompute": "sometimes"}}, "layout: recompute"),
    (lambda d: {**d, "layout": {**d["layout"], "speed": 3}}, "layout: speed"),
    (lambda d: {**d, "layout": {**d["layout"], "dp": 64}}, "layout: degrees"),
    (lambda d: {**d, "layout": {**d["layout"], "tp": 3, "dp": 1}}, "layout:"),
    (lambda d: {**d, "stack": {"framework": "jax-magic"}}, "unknown software stack"),
    (lambda d: {**d, "stack": {"compile": "maybe"}}, "stack: compile"),
])
def test_bad_plans_are_one_line_errors(tmp_path, edit, msg):
    p, d = _good(tmp_path)
    p.write_text(yaml.safe_dump(edit(d)))
    with pytest.raises(UserError, match=msg) as ei:
        load_plan(p)
    assert "\n" not in str(ei.value)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n gpu: x")
    with pytest.raises(UserError, match="malformed YAML"):
        load_plan(bad)
    badj = tmp_path / "bad.json"
    badj.write_text("{\"model\": ")
    with pytest.raises(UserError, match="malformed JSON"):
        load_plan(badj)
    with pytest.raises(UserError, match="not found"):
        load_plan(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="cannot write plan"):
        save_plan(tmp_path / "no-such-dir" / "p.yaml", "gpt3-175b", make_cluster("h100-sxm", 8),
                  Layout(tp=8, global_batch=8, seq_len=2048))
