"""fp8 parameters (NeMo/MLPerf FP8_PARAMS, Megatron --fp8-param-gather): the weights' all-gathers move 1 byte per
parameter instead of 2; nothing changes without fp8 training; a run that claims them without fp8 is refused."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.estimate import estimate_arrays, layout_arrays
from megacluster.specs import Layout, StackSpec
from megacluster.validate import validate_runs

LLAMA8 = catalog.model("llama3.1-8b")


def _f(precision: str, fp8_params, zero: int = 1):
    L = Layout(tp=1, cp=2, dp=32, micro_batch=1, global_batch=32, seq_len=8192, recompute="none", zero=zero,
               precision=precision)
    return estimate_arrays(LLAMA8, make_cluster("b200", 64), StackSpec(fp8_params=fp8_params), layout_arrays(L))


@pytest.mark.parametrize("zero", [1, 3])
def test_fp8_params_halve_the_parameter_gathers_of_an_fp8_run(zero):
    plain, f8 = _f("fp8", None, zero), _f("fp8", True, zero)
    assert float(f8["t_dp_comm_total"]) < float(plain["t_dp_comm_total"])
    assert float(f8["step_time_s"]) <= float(plain["step_time_s"])
    # on Blackwell one fp8 copy of a weight serves both GEMM layouts (no cached transpose): 1 byte, not 2
    if zero < 3:
        assert float(plain["m_weights"]) - float(f8["m_weights"]) == pytest.approx(float(f8["params_per_gpu"]))


def test_fp8_weights_are_not_cast_each_micro_batch():
    """With 16-bit weights every micro-batch casts this GPU's weights to fp8; fp8 weights are not cast (their
    transposes are made once per step): the memory-bound time of a many-micro-batch step falls."""
    L = Layout(tp=8, pp=8, cp=2, dp=4, vp=8, micro_batch=1, global_batch=1152, seq_len=8192, recompute="none",
               zero=1, precision="fp8")
    cl = make_cluster("h100-sxm", 512)
    m405 = catalog.model("llama3.1-405b")
    plain = estimate_arrays(m405, cl, StackSpec(), layout_arrays(L))
    f8 = estimate_arrays(m405, cl, StackSpec(fp8_params=True), layout_arrays(L))
    assert float(f8["t_memory_bound"]) < 0.8 * float(plain["t_memory_bound"])
    assert float(f8["t_gemm_mlp"]) == pytest.approx(float(plain["t_gemm_mlp"]))


def test_fp8_params_do_nothing_to_a_bf16_step():
    assert float(_f("bf16", True)["step_time_s"]) == pytest.approx(float(_f("bf16", None)["step_time_s"]))


def _run(rid: str, **spec_changes):
    base = next(r for r in catalog.load("runs")["runs"] if r["id"] == "nemo2407-llama3-70b-64gpu-fp8")
    return {**base, "id": rid, "spec": {**base["spec"], **spec_changes}}


def test_a_run_states_fp8_params_and_a_contradiction_is_its_reason_line():
    plain = validate_runs([_run("plain")])["runs"][0]
    f8 = validate_runs([_run("f8", stack={"framework": "megatron", "fp8_params": True})])["runs"][0]
    assert f8.predicted >= plain.predicted
    out = validate_runs([_run("ok"), _run("bf", precision="bf16", stack={"framework": "megatron",
                                                                         "fp8_params": True}),
                         _run("str", stack={"framework": "megatron", "fp8_params": "yes"})])
    reasons = {s.id: s.reason for s in out["skipped"]}
    assert "fp8_params is true but the run does not train in fp8" in reasons["bf"]
    assert "spec.stack.fp8_params must be true or false" in reasons["str"]


def test_the_flag_on_estimate(capsys):
    args = ["estimate", "--model", "llama3.1-8b", "--gpu", "b200", "--gpus", "64", "--cp", "2", "--global-batch",
            "32", "--micro-batch", "1", "--seq-len", "8192", "--precision", "fp8", "--recompute", "none", "--json"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    code, out8, err = run_cli(capsys, *args, "--fp8-params")
    assert code == 0, err
    assert json.loads(out8)["step_time_s"] < json.loads(out)["step_time_s"]


@pytest.mark.parametrize("cmd, expect", [
    (["estimate", "--pp", "2"], "error: --fp8-params keeps fp8 weights, but this layout trains in bf16; add "
                                "--precision fp8 or drop --fp8-params"),
    (["plan", "--precision", "bf16"], "error: --fp8-params keeps fp8 weights, but --precision bf16 pins a 16-bit "
                                      "layout; pin --precision fp8 (or leave it to the search) or drop --fp8-params"),
])
def test_fp8_params_on_a_16_bit_layout_is_one_line(capsys, cmd, expect):
    code, out, err = run_cli(capsys, cmd[0], "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "16",
                             "--global-batch", "32", *cmd[1:], "--fp8-params")
    assert code == 2 and out == "" and err.strip().splitlines() == [expect]
