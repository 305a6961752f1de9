"""``megacluster validate``: every published run is predicted end to end, and the JSON has the promised shape.

The accuracy bar (MAPE <= 10%, worst <= 25%) is not asserted here while the step model's constants are being
tuned; each prediction must be finite and positive and each error consistent with it."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from cli_helpers import run_cli
from megacluster import catalog
from megacluster.validate import load_runs, validate_runs


@pytest.fixture(scope="module")
def result():
    return validate_runs(load_runs())


def test_every_published_run_gets_a_finite_positive_prediction(result):
    runs = load_runs()
    assert len(result["runs"]) == len(runs) >= 30
    assert [r.id for r in result["runs"]] == [r["id"] for r in runs]
    for r in result["runs"]:
        assert math.isfinite(r.predicted) and r.predicted > 0, r.id
        assert r.reference > 0, r.id
        assert r.error == pytest.approx(r.predicted / r.reference - 1.0), r.id


def test_reference_is_the_runs_measured_figure(result):
    by_id = {r["id"]: r for r in load_runs()}
    for r in result["runs"]:
        assert r.reference == pytest.approx(by_id[r.id]["reference"]["tokens_per_s_per_gpu"])
        assert r.n_gpus == by_id[r.id]["spec"]["n_gpus"]
        assert r.gpu == by_id[r.id]["spec"]["gpu"]


def test_summary_overall_by_generation_and_framework(result):
    s = result["summary"]
    errs = [abs(r.error) for r in result["runs"]]
    assert s["all"]["n"] == len(errs)
    assert s["all"]["mape"] == pytest.approx(sum(errs) / len(errs))
    assert s["all"]["max_abs_error"] == pytest.approx(max(errs))
    gens = {r.generation for r in result["runs"]}
    fws = {r.framework for r in result["runs"]}
    assert {"ampere", "hopper"} <= gens
    assert {"megatron", "torchtitan"} <= fws
    for g in gens:
        assert s[f"generation:{g}"]["n"] == sum(r.generation == g for r in result["runs"])
    for f in fws:
        assert s[f"framework:{f}"]["n"] == sum(r.framework == f for r in result["runs"])


def test_searched_micro_batch_fits_where_the_spec_leaves_it_open(result):
    by_id = {r["id"]: r for r in load_runs()}
    for r in result["runs"]:
        spec = by_id[r.id]["spec"]
        if spec.get("micro_batch"):
            assert r.micro_batch == spec["micro_batch"], r.id
        else:
            assert r.micro_batch >= 1


def test_torchtitan_pipelines_split_the_local_batch_into_pp_micro_batches(result):
    """torchtitan's default (pipeline_parallel_microbatches = pipeline degree) fixes the micro-batch of a
    pipelined run that states none: Table 5's 405B 1F1B run, local batch 32 over PP8, ran micro-batch 4.
    Stacks whose micro-batch is a free knob (Megatron) still get the best one searched."""
    from megacluster.validate import _micro_batch_candidates

    by_id = {r.id: r for r in result["runs"]}
    assert by_id["torchtitan-l31-405b-512gpu-fsdp8-tp8-pp8-1f1b"].micro_batch == 256 // 8 // 8
    run = {"spec": {"tp": 8, "pp": 8, "dp": 8, "global_batch": 256, "seq_len": 8192}}
    assert _micro_batch_candidates(run, "stages") == [4]
    assert _micro_batch_candidates(run, "free") == [1, 2, 4, 8, 16, 32]
    assert _micro_batch_candidates({"spec": {**run["spec"], "pp": 1}}, "stages") == [1, 2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match="pp_microbatches"):
        _micro_batch_candidates(run, "sometimes")


def test_memory_is_scored_against_published_peaks(result):
    """Runs that publish a per-GPU peak memory (torchtitan's benchmarks) get a memory error; the memory
    summary is their MAPE and worst."""
    by_id = {r["id"]: r for r in load_runs()}
    scored = []
    for r in result["runs"]:
        peak = ((by_id[r.id].get("measured") or {}).get("other") or {}).get("peak_memory_gib")
        assert r.memory_gib > 0, r.id
        if peak:
            assert r.memory_reference_gib == pytest.approx(peak)
            assert r.memory_error == pytest.approx(r.memory_gib / peak - 1.0)
            scored.append(abs(r.memory_error))
        else:
            assert r.memory_error is None
    assert len(scored) >= 10
    assert result["memory"]["n"] == len(scored)
    assert result["memory"]["mape"] == pytest.approx(sum(scored) / len(scored))
    assert result["memory"]["max_abs_error"] == pytest.approx(max(scored))


def test_cli_json_carries_the_memory_score(tmp_path, capsys):
    data = catalog.load("runs")
    runs = [r for r in data["runs"] if ((r.get("measured") or {}).get("other") or {}).get("peak_memory_gib")][:2]
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"runs": runs}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["memory_n"] == 2
    errs = [abs(r["memory_error"]) for r in d["runs"]]
    assert d["memory_mape"] == pytest.approx(sum(errs) / 2)


def _subset_file(tmp_path, n=3):
    data = catalog.load("runs")
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"runs": data["runs"][:n]}))
    return path, data["runs"][:n]


def test_cli_json_shape(tmp_path, capsys):
    path, runs = _subset_file(tmp_path)
    code, out, err = run_cli(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {"runs", "mape", "max_abs_error"} <= set(d)
    assert [r["id"] for r in d["runs"]] == [r["id"] for r in runs]
    for r in d["runs"]:
        assert {"id", "reference", "predicted", "error"} <= set(r)
        assert r["predicted"] > 0 and math.isfinite(r["error"])
    errs = [abs(r["error"]) for r in d["runs"]]
    assert d["mape"] == pytest.approx(sum(errs) / len(errs))
    assert d["max_abs_error"] == pytest.approx(max(errs))


def test_cli_json_runs_file_in_json_format(tmp_path, capsys):
    data = catalog.load("runs")
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"runs": data["runs"][:1]}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0, err
    assert len(json.loads(out)["runs"]) == 1


def test_cli_table_prints_runs_and_mape(tmp_path, capsys):
    path, runs = _subset_file(tmp_path, 2)
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 0, err
    for r in runs:
        assert r["id"] in out
    assert "MAPE" in out and "all runs" in out


@pytest.mark.parametrize("text,needle", [
    ("runs: [\n  - id: x\n   bad: indent\n", "malformed YAML"),
    ("just a string\n", "runs"),
    ("runs: 3\n", "runs"),
    ("runs:\n- id: x\n", "spec"),
    ("runs: []\n", "empty"),
])
def test_malformed_runs_files_are_one_line_errors(tmp_path, capsys, text, needle):
    path = tmp_path / "runs.yaml"
    path.write_text(text)
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert "Traceback" not in err and out == ""


def test_malformed_json_runs_file(tmp_path, capsys):
    path = tmp_path / "runs.json"
    path.write_text('{"runs": [}')
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 2 and "malformed JSON" in err and err.count("\n") == 1


def test_missing_runs_file(tmp_path, capsys):
    code, out, err = run_cli(capsys, "validate", "--runs", str(tmp_path / "nope.yaml"))
    assert code == 2 and "not found" in err


def test_a_mistyped_set_name_is_one_line_naming_the_sets(capsys):
    code, out, err = run_cli(capsys, "validate", "--runs", "moer")
    assert code == 2 and err.count("\n") == 1 and "not found: moer" in err and "published, more" in err


def test_run_with_unknown_gpu_names_the_nearest(tmp_path, capsys):
    run = dict(catalog.load("runs")["runs"][0])
    run["spec"] = {**run["spec"], "gpu": "a100-80"}
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"runs": [run]}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 2 and "a100-80gb" in err and err.count("\n") == 1


def test_run_without_reference(tmp_path, capsys):
    run = dict(catalog.load("runs")["runs"][0])
    run.pop("reference")
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"runs": [run]}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 2 and "reference.tokens_per_s_per_gpu" in err


# ------------------------------------------------------------------ runs that name things in other ways
def _run(rid: str, **spec_changes):
    base = next(r for r in catalog.load("runs")["runs"] if r["id"] == "nemo2407-llama3-70b-64gpu-fp8")
    run = {**base, "id": rid, "spec": {**base["spec"], **spec_changes}}
    return run


def _predicted(run) -> float:
    out = validate_runs([run])
    assert not out["skipped"], out["skipped"]
    return out["runs"][0].predicted


def test_a_run_that_cannot_be_predicted_is_listed_and_the_rest_are_scored(tmp_path, capsys):
    good, bad = _run("good"), _run("bad", gpu="tpu-v5p")
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"runs": [good, bad]}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(path), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["id"] for r in data["runs"]] == ["good"] and data["n"] == 1
    assert data["skipped"][0]["id"] == "bad" and "unknown GPU 'tpu-v5p'" in data["skipped"][0]["reason"]
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 0 and "runs not predicted" in out and "tpu-v5p" in out


def test_no_predictable_run_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({"runs": [_run("a", gpu="tpu-v5p"), _run("b", precision="int4")]}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(path))
    assert code == 2 and err.count("\n") == 1 and "no run could be predicted" in err and "tpu-v5p" in err


@pytest.mark.parametrize("change", [dict(gpu="h100"), dict(gpu="H100-SXM5"), dict(fabric="ib"),
                                    dict(fabric="infiniband-ndr"), dict(stack={"framework": "nemo"}),
                                    dict(stack={"framework": "megatron-core"})])
def test_other_names_of_the_same_hardware_and_stack_give_the_same_prediction(change):
    assert _predicted(_run("alias", **change)) == pytest.approx(_predicted(_run("canonical")))


def test_megatron_deepspeed_is_the_deepspeed_stack():
    out = validate_runs([_run("mds", stack={"framework": "megatron-deepspeed"})])
    assert out["runs"][0].framework == "deepspeed"


def test_unknown_framework_and_fabric_are_predicted_with_defaults_and_say_so():
    out = validate_runs([_run("x", stack={"framework": "maxtext"}, fabric="slingshot-11")])
    r = out["runs"][0]
    assert r.framework == "maxtext (as megatron)" and "'maxtext'" in r.note and "'slingshot-11'" in r.note
    assert r.predicted == pytest.approx(_predicted(_run("canonical")))    # megatron on the default fabric


def test_named_fp8_recipes_are_fp8_and_unknown_precisions_are_refused():
    assert _predicted(_run("mx", precision="mxfp8")) > _predicted(_run("b", precision="bf16"))
    out = validate_runs([_run("ok"), _run("fp4", precision="fp4")])
    assert out["skipped"][0].id == "fp4" and "precision 'fp4' is not modelled" in out["skipped"][0].reason


def test_implicit_spec_fields_are_filled_from_the_gpu_count_and_the_standard_assumption():
    explicit = _run("explicit")
    assert explicit["spec"]["recompute"] == "selective" and explicit["spec"]["ep"] == 1
    implicit = _run("implicit", dp=None, recompute=None, ep=None)       # DP from 64 GPUs / (TP4 PP4 CP2)
    assert _predicted(implicit) == pytest.approx(_predicted(explicit))


def test_recompute_names_are_normalised_and_an_unknown_one_is_refused():
    assert _predicted(_run("op", recompute="op")) == pytest.approx(_predicted(_run("sel")))
    out = validate_runs([_run("ok"), _run("odd", recompute="sometimes")])
    assert out["skipped"][0].id == "odd"
    assert out["skipped"][0].reason == "run odd: recompute 'sometimes' is not one of none, selective, full"


def test_gb200_runs_use_the_72_gpu_nvlink_domain_whatever_the_tray_size():
    four = validate_runs([_run("tray", gpu="gb200", gpus_per_node=4, nics_per_node=4)])["runs"][0]
    rack = validate_runs([_run("rack", gpu="gb200", gpus_per_node=72, nics_per_node=72)])["runs"][0]
    assert four.predicted == pytest.approx(rack.predicted)


def test_unknown_framework_with_sharded_weights_runs_on_the_pytorch_fsdp_stack():
    r = validate_runs([_run("fsdp", stack={"framework": "metaseq"}, zero=3)])["runs"][0]
    assert r.framework == "metaseq (as torchtitan)" and "torchtitan's constants" in r.note


def test_moe_shape_keys_in_other_spellings_are_read():
    base = next(r for r in catalog.load("runs")["runs"] if r["id"] == "deepseek-v3-2048gpu-pretraining")
    model = {"name": "Some MoE", "n_layers": 40, "d_model": 6144, "n_heads": 48, "n_kv_heads": 8, "ffn_hidden": 10752,
             "vocab": 100352, "seq_len": 4096, "mlp": "swiglu"}
    spelled = [{"routed_experts": 16, "top_k": 4, "expert_ffn_hidden": 10752},
               {"num_experts": 16, "num_experts_per_tok": 4}]
    preds = []
    for i, moe in enumerate(spelled):
        run = {**base, "id": f"moe{i}", "model": {**model, "moe": moe},
               "spec": {**base["spec"], "ep": 8, "pp": 4, "dp": 512}}
        preds.append(_predicted(run))
    assert preds[0] == pytest.approx(preds[1])


def test_mla_ranks_in_a_run_are_read_as_multi_head_latent_attention():
    """A run's model that gives MLA ranks (Hugging Face keys or an ``mla`` mapping) costs as MLA, exactly as
    the catalog's DeepSeek-V2 does; without them the same shape is plain multi-head attention."""
    from megacluster.validate import model_from_run
    v2 = catalog.model("deepseek-v2")
    shape = {"name": "Some MLA model", "n_layers": 60, "d_model": 5120, "n_heads": 128, "n_kv_heads": 128,
             "ffn_hidden": 12288, "vocab": 102400, "seq_len": 4096, "mlp": "swiglu"}
    ranks = {"q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
             "v_head_dim": 128}
    flat = model_from_run({"model": {**shape, **ranks}})
    nested = model_from_run({"model": {**shape, "mla": ranks}})
    plain = model_from_run({"model": shape})
    assert flat.mla == nested.mla == v2.mla
    assert flat.attn_params == v2.attn_params != plain.attn_params


def test_the_more_runs_set_is_predicted_whole_and_named_on_the_command_line(capsys):
    """The catalog's second runs file (published runs outside the team's set) loads by name and every run in
    it is predicted: none is skipped for a name or field the step model does not read."""
    runs = load_runs("more")
    assert len(runs) >= 40 and all(r["reference"]["tokens_per_s_per_gpu"] > 0 for r in runs)
    ids = {r["id"] for r in runs}
    assert not ids & {r["id"] for r in load_runs()}          # disjoint from the team's validation set
    result = validate_runs(runs)
    assert not result["skipped"] and len(result["runs"]) == len(runs)
    code, out, _ = run_cli(capsys, "validate", "--runs", "more", "--json")
    assert code == 0 and len(json.loads(out)["runs"]) == len(runs)


def test_a_run_may_state_fp32_gradient_accumulation_and_reduction():
    """spec.stack.grad_reduce_fp32 (Megatron-LM's pretrain script forces it for bf16): 4-byte gradients held
    and reduced instead of the Hopper Megatron stack's 2, so more memory and never a faster step; a value
    that is not a boolean skips the run with one reason line."""
    from megacluster.estimate import stack_constants
    from megacluster.specs import StackSpec

    c = stack_constants(StackSpec(framework="megatron", grad_reduce_fp32=True), "hopper")
    assert (c["grad_bytes"], c["grad_reduce_bytes"]) == (4, 4)
    assert stack_constants(StackSpec(framework="megatron"), "hopper")["grad_bytes"] == 2
    b16 = validate_runs([_run("b16", stack={"framework": "megatron"})])["runs"][0]
    f32 = validate_runs([_run("f32", stack={"framework": "megatron", "grad_reduce_fp32": True})])["runs"][0]
    assert f32.memory_gib > b16.memory_gib and f32.predicted <= b16.predicted
    out = validate_runs([_run("ok"), _run("odd", stack={"framework": "megatron", "grad_reduce_fp32": "yes"})])
    assert out["skipped"][0].id == "odd" and "grad_reduce_fp32 must be true or false" in out["skipped"][0].reason


def test_composer_runs_use_the_composer_stack_and_its_triton_attention():
    """MPT runs name composer: their own stack (FSDP1 with fp32 reduce, one kernel per op), whose Triton flash
    attention runs at 1/1.83 of FlashAttention-2 (FA2 paper: about 1.4x slower forward, 2x backward, weighted
    by time with a backward of 2.5 forwards)."""
    from megacluster.estimate import stack_constants
    from megacluster.specs import StackSpec

    amp = stack_constants(StackSpec(framework="llm-foundry"), "ampere")
    hop = stack_constants(StackSpec(framework="composer"), "hopper")
    assert amp["attention_kernel_efficiency"] == pytest.approx(3.5 / (1.4 + 2 * 2.5), abs=0.005)
    assert hop["attention_kernel_efficiency"] == pytest.approx(0.56 * 3.5 / (1.4 + 2 * 2.5), abs=0.005)
    assert amp["grad_reduce_bytes"] == 4 and amp["elementwise"] == 1.0
    mpt = [r for r in load_runs("more") if r["spec"].get("stack", {}).get("framework") == "composer"][:2]
    assert {r.framework for r in validate_runs(mpt)["runs"]} == {"composer"}


def test_the_more_set_has_at_least_60_sourced_runs():
    runs = load_runs("more")
    assert len(runs) >= 60 and len({r["id"] for r in runs}) == len(runs)
    assert all(r["source"].get("title") and r["source"].get("locator") for r in runs)


def test_efa_is_a_fabric_of_its_own_and_slower_than_infiniband_at_the_same_line_rate():
    """AWS EFA reaches a smaller share of its line rate in NCCL than InfiniBand (fabrics.yaml): a run on EFA is
    predicted slower than the same run on InfiniBand at the same NICs, and no substitution note is printed."""
    sharded = dict(tp=1, pp=1, dp=64, cp=1, vp=1, zero=3, micro_batch=1, nic_gbps=100, nics_per_node=4)
    efa = validate_runs([_run("efa", fabric="efa", **sharded)])["runs"][0]
    ib = validate_runs([_run("ib", fabric="infiniband", **sharded)])["runs"][0]
    assert "fabric" not in (efa.note or "") and efa.predicted < ib.predicted


def test_sagemaker_smp_is_a_catalog_stack_with_unfused_attention():
    from megacluster.estimate import stack_constants
    from megacluster.specs import StackSpec

    assert catalog.stack_constants("smp")["id"] == "sagemaker-smp"
    c = stack_constants(StackSpec(framework="sagemaker-smp"), "ampere")
    assert c["attention"] == "unfused" and c["fsdp_gather_per_microbatch"] and c["dp_overlap"]


def test_a_run_may_state_its_attention_kernel():
    """spec.stack.attention overrides the stack's default for the GPU generation: Megatron on an A100 is unfused
    (its 2021-22 code), Megatron-LM with --use-flash-attn is flash and faster; anything else is one reason line."""
    from megacluster.estimate import stack_constants
    from megacluster.specs import StackSpec

    assert stack_constants(StackSpec(framework="megatron"), "ampere")["attention"] == "unfused"
    assert stack_constants(StackSpec(framework="megatron", attention="flash"), "ampere")["attention"] == "flash"
    amp = dict(gpu="a100-80gb", fabric="infiniband-hdr", nic_gbps=200, precision="bf16", seq_len=4096)
    plain = validate_runs([_run("plain", stack={"framework": "megatron"}, **amp)])["runs"][0]
    flash = validate_runs([_run("fa", stack={"framework": "megatron", "attention": "flash"}, **amp)])["runs"][0]
    assert flash.predicted > plain.predicted
    out = validate_runs([_run("ok"), _run("odd", stack={"framework": "megatron", "attention": "fast"})])
    assert out["skipped"][0].id == "odd"
    assert out["skipped"][0].reason == "malformed run: attention: Input should be 'flash' or 'unfused', got 'fast'"


def test_a_run_may_state_its_pipeline_schedule_and_an_unknown_stack_key_is_refused():
    """spec.stack.schedule reaches the step model (a 1F1B run priced as ZB-H1 has a smaller bubble); an unknown
    schedule or an unknown spec.stack key is the run's one reason line, never silently ignored."""
    pp = dict(pp=4, dp=2, vp=1, global_batch=64, precision="bf16")
    plain = validate_runs([_run("plain", stack={"framework": "megatron"}, **pp)])["runs"][0]
    zb = validate_runs([_run("zb", stack={"framework": "megatron", "schedule": "zb-h1"}, **pp)])["runs"][0]
    assert zb.predicted > plain.predicted
    out = validate_runs([_run("ok"), _run("odd", stack={"framework": "megatron", "schedule": "gpipe"}),
                         _run("typo", stack={"framework": "megatron", "schedul": "zb-h1"})])
    reasons = {s.id: s.reason for s in out["skipped"]}
    assert "schedule: Input should be '1f1b', 'dualpipe', 'dualpipe-v' or 'zb-h1', got 'gpipe'" in reasons["odd"]
    assert "unknown key 'schedul' (did you mean schedule?)" in reasons["typo"]


def test_an_assumed_recompute_that_fits_nothing_gives_way_to_the_least_that_fits():
    """A run ran, so a layout that fits in no micro-batch with its assumed recompute recomputed more: none gives
    way to selective; beyond selective, whole layers of full recompute are added (Megatron's block method),
    as few as fit, with memory and time between the two levels. A stated recompute is never changed."""
    from megacluster.validate import predict_run

    big = dict(tp=1, pp=1, dp=64, cp=1, vp=1, zero=3, micro_batch=1, seq_len=8192, sequence_parallel=False)
    stated = predict_run(_run("stated", recompute="selective", assumed=[], **big))
    assert not stated.fits and stated.note is None                      # as written, flagged, untouched
    partial = predict_run(_run("assumed", recompute="selective", assumed=["recompute (selective)"], **big))
    full = predict_run(_run("full", recompute="full", assumed=[], **big))
    assert partial.fits and "layers per stage on top of selective" in partial.note
    assert partial.memory_gib <= 80.0 < stated.memory_gib
    assert full.predicted < partial.predicted < stated.predicted


@pytest.mark.parametrize("value, reason", [(0, "dp_replicate: Input should be greater than 0"),
                                           (-2, "dp_replicate must not be negative"),
                                           (3, "dp_replicate=3 must divide dp=512"),
                                           (True, "dp_replicate must be a whole number")])
def test_a_runs_impossible_replicas_are_a_reason_not_a_default(value, reason):
    """0 is not read as "not given": a run whose replicas cannot be is listed as not predicted, with why."""
    run = next(r for r in load_runs("more") if r["id"] == "bloomberggpt-50b-512gpu")
    out = validate_runs([_run("ok"), {**run, "id": "odd", "spec": {**run["spec"], "dp_replicate": value}}])
    assert [s.id for s in out["skipped"]] == ["odd"] and reason in out["skipped"][0].reason


def test_bloomberggpt_shards_over_128_gpus_in_4_replicas_as_its_paper_says():
    """The spec's dp_replicate: the ZeRO-3 state lives on 128 GPUs (4x the state per GPU of sharding over 512),
    which is what leaves micro-batch 4 without room on a 40 GB A100."""
    from megacluster.validate import predict_run

    run = next(r for r in load_runs("more") if r["id"] == "bloomberggpt-50b-512gpu")
    assert run["spec"]["dp_replicate"] == 4
    res = predict_run(run)
    assert "rep4" in res.layout and res.fits
    flat = predict_run({**run, "spec": {**run["spec"], "dp_replicate": 1}})
    assert flat.micro_batch >= res.micro_batch


def test_megascale_is_a_catalog_stack_with_its_papers_overlaps():
    """MegaScale (arXiv 2402.15627) is Megatron-LM with FlashAttention-2 and TP, DP and PP communication
    overlapped, as its paper states; each of those is a single-source setup constant that strict
    cross-validation reverts to the Megatron-LM of its base."""
    from megacluster.estimate import stack_constants
    from megacluster.specs import StackSpec

    ms = stack_constants(StackSpec(framework="megascale"), "ampere")
    mg = stack_constants(StackSpec(framework="megatron"), "ampere")
    assert (ms["attention"], ms["tp_overlap"], ms["dp_overlap"]) == ("flash", "chunked", True)
    assert (mg["attention"], mg["tp_overlap"], mg["dp_overlap"]) == ("unfused", "none", False)
    reverted = {e["constant"]: e["revert"] for e in catalog.stack_constants("megascale")["single_source"]}
    assert reverted == {"attention": "unfused", "tp_overlap": "none", "dp_overlap": False, "pp_overlap": 0.0}
    runs = [r for r in load_runs("more") if r["spec"]["stack"]["framework"] == "megascale"][:2]
    assert runs and {r.framework for r in validate_runs(runs)["runs"]} == {"megascale"}
