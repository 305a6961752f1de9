"""A run's own TP overlap, data-parallel bucket size and Megatron-Core's align_param_gather (StackSpec fields,
``spec.stack`` keys and ``estimate``/``plan`` flags).

* tp_overlap none: every TP collective is exposed, more than under chunked overlap.
* align_param_gather without an interleaved schedule: the weights' all-gathers are not prefetched, so the
  forward waits for all of them; with vp > 1 (the schedule starts them) or ZeRO-3 nothing changes.
* dp_bucket_params: smaller buckets make more bucket groups, and each group's serial all-gather pays its latency.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cli_helpers import run_cli
from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.estimate import estimate_arrays, layout_arrays
from megacluster.plan_file import load_plan
from megacluster.specs import Layout, StackSpec
from megacluster.validate import validate_runs

LLAMA8 = catalog.model("llama3.1-8b")


def _r(stack: StackSpec, **layout):
    L = Layout(**{**dict(tp=2, dp=64, micro_batch=1, global_batch=64, seq_len=8192, sequence_parallel=True,
                         recompute="none", zero=1, precision="fp8"), **layout})
    return estimate_arrays(LLAMA8, make_cluster("h100-sxm", L.tp * L.pp * L.dp * L.cp), stack, layout_arrays(L))


def test_tp_overlap_none_exposes_every_tp_collective():
    chunked, none = _r(StackSpec()), _r(StackSpec(tp_overlap="none"))
    # chunked leaves one of tp chunks exposed (the GEMMs here are long enough to hide the rest): tp times less
    assert float(none["t_tp_comm"]) == pytest.approx(2 * float(chunked["t_tp_comm"]))
    assert float(none["step_time_s"]) > float(chunked["step_time_s"])


def test_align_param_gather_without_interleaving_exposes_the_weight_gathers():
    plain, aligned = _r(StackSpec(fp8_params=True)), _r(StackSpec(fp8_params=True, align_param_gather=True))
    assert float(plain["t_dp_comm"]) < 0.01                       # hidden behind the forward
    assert float(aligned["t_dp_comm"]) > 0.02                     # the forward waits for each group
    # ZeRO-3 (FSDP) and an interleaved schedule are not this path
    for kw in (dict(zero=3), dict(tp=2, pp=2, dp=32, vp=2, global_batch=128)):
        a, b = _r(StackSpec(fp8_params=True), **kw), _r(StackSpec(fp8_params=True, align_param_gather=True), **kw)
        assert float(b["step_time_s"]) == pytest.approx(float(a["step_time_s"]))


def test_smaller_buckets_pay_more_latency_on_serial_gathers():
    big = _r(StackSpec(fp8_params=True, align_param_gather=True, dp_bucket_params=500_000_000))
    tiny = _r(StackSpec(fp8_params=True, align_param_gather=True, dp_bucket_params=64))
    assert float(tiny["t_dp_comm"]) > float(big["t_dp_comm"]) + 0.01
    # without align_param_gather the gathers are prefetched and the bucket size leaves them hidden
    assert float(_r(StackSpec(fp8_params=True, dp_bucket_params=64))["t_dp_comm"]) < 0.01


def test_contradictions_and_bad_values_are_refused():
    with pytest.raises(ValidationError, match="async_tp"):
        StackSpec(async_tp=True, tp_overlap="none")
    with pytest.raises(ValidationError):
        StackSpec(dp_bucket_params=0)


def _run(rid: str, **stack):
    base = next(r for r in catalog.load("runs_more")["runs"] if r["id"] == "mlperf-v51-cisco-llama31-8b-h100-128gpu")
    return {**base, "id": rid, "spec": {**base["spec"], "stack": {"framework": "megatron", "fp8_params": True,
                                                                  **stack}}}


def test_a_run_states_its_overlaps_and_a_bad_value_is_its_reason_line():
    out = validate_runs([_run("plain"), _run("own", tp_overlap="none", align_param_gather=True,
                                             dp_bucket_params=64), _run("bad", tp_overlap="sometimes")])
    by = {r.id: r for r in out["runs"]}
    assert by["own"].predicted < by["plain"].predicted
    (bad,) = out["skipped"]
    assert bad.id == "bad" and "tp_overlap" in bad.reason and "sometimes" in bad.reason


def test_cli_flags_reach_the_estimate_and_the_plan_file(tmp_path, capsys):
    base = ["--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "128", "--tp", "2", "--precision", "fp8",
            "--global-batch", "64", "--micro-batch", "1", "--fp8-params"]

    def step(*extra):
        code, out, err = run_cli(capsys, "estimate", *base, *extra, "--json")
        assert code == 0, err
        return json.loads(out)["step_time_s"]

    assert step("--tp-overlap", "none", "--align-param-gather", "--dp-bucket-params", "64") > step()
    for bad in (["--tp-overlap", "sometimes"], ["--dp-bucket-params", "0"], ["--dp-bucket-params", "nan"],
                ["--dp-bucket-params", "-64"], ["--async-tp", "--tp-overlap", "none"]):
        code, out, err = run_cli(capsys, "estimate", *base, *bad)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, (bad, err)
    plan = tmp_path / "p.yaml"
    code, _, err = run_cli(capsys, "plan", *base[:6], "--tp-overlap", "none", "--dp-bucket-params", "64",
                           "--align-param-gather", "--out", str(plan))
    assert code == 0, err
    st = load_plan(plan).stack
    assert (st.tp_overlap, st.dp_bucket_params, st.align_param_gather) == ("none", 64, True)
