"""The core commands through ``megacluster.cli.main``: ``estimate``, ``catalog``, ``plan`` (``validate`` is in
test_validate.py). Output shapes, defaults, plan files, and every kind of bad input as one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_helpers import run_cli
from megacluster import catalog
from megacluster.report.plan_view import parse_sizes
from megacluster.report.progress import ProgressBar

HF = Path(__file__).parent / "data" / "hf"
GPT3 = ["--model", "gpt3-175b", "--gpu", "h100-sxm"]
ESTIMATE_KEYS = {"step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "tflops_per_gpu", "mfu", "hfu",
                 "memory_gib_per_gpu", "fits", "time_s", "memory_gib", "phases_s", "layout"}


def assert_one_line_error(code: int, out: str, err: str, *needles: str) -> None:
    assert code == 2, (code, out, err)
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    for n in needles:
        assert n in err, (n, err)


# ------------------------------------------------------------------------------------------ estimate
def test_estimate_json_has_rates_memory_and_breakdowns(capsys):
    code, out, err = run_cli(capsys, "estimate", *GPT3, "--gpus", "1024", "--tp", "8", "--pp", "8",
                             "--global-batch", "1536", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert ESTIMATE_KEYS <= set(d)
    assert d["fits"] is True and d["step_time_s"] > 0 and 0 < d["mfu"] < 1
    assert d["layout"]["dp"] == 1024 // (8 * 8)                     # dp defaults to GPUs / (tp pp cp)
    assert d["tokens_per_s"] == pytest.approx(1536 * 2048 / d["step_time_s"])
    assert d["tokens_per_s_per_gpu"] == pytest.approx(d["tokens_per_s"] / 1024)
    assert set(d["memory_gib"]) == {"weights", "gradients", "optimizer", "activations", "buffers"}
    assert sum(d["memory_gib"].values()) == pytest.approx(d["memory_gib_per_gpu"])
    assert {"bubble", "dp_comm", "tp_comm", "optimizer"} <= set(d["time_s"])
    assert sum(d["phases_s"].values()) == pytest.approx(d["step_time_s"])


def test_estimate_tables(capsys):
    code, out, err = run_cli(capsys, "estimate", *GPT3, "--gpus", "1024", "--tp", "8", "--pp", "8",
                             "--global-batch", "1536")
    assert code == 0, err
    for text in ("GPT-3 175B", "TP8 PP8 DP16", "step time", "MFU", "memory per GPU", "activations",
                 "time per step", "bubble", "data parallel", "fits"):
        assert text in out


def test_estimate_defaults(capsys):
    # llama3-8b on 8 GPUs with FSDP: tp = pp = 1, dp = 8, the model's sequence, about 4M tokens per step
    code, out, err = run_cli(capsys, "estimate", "--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8",
                             "--zero", "3", "--recompute", "full", "--json")
    assert code == 0, err
    L = json.loads(out)["layout"]
    m = catalog.model("llama3-8b")
    assert (L["tp"], L["pp"], L["dp"], L["cp"], L["micro_batch"]) == (1, 1, 8, 1, 1)
    assert L["seq_len"] == m.seq_len
    assert L["global_batch"] * L["seq_len"] == pytest.approx(2 ** 22, rel=0.01)
    assert L["global_batch"] % 8 == 0


def test_estimate_stack_and_cluster_flags_change_the_prediction(capsys):
    base = ["estimate", "--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "64", "--tp", "8", "--zero", "3",
            "--recompute", "full", "--global-batch", "64", "--json"]
    times = {}
    for name, extra in (("megatron", []), ("titan", ["--framework", "torchtitan"]),
                        ("titan-compiled", ["--framework", "torchtitan", "--compile", "--async-tp"]),
                        ("slow-net", ["--nic-gbps", "100", "--fabric", "ethernet"])):
        code, out, err = run_cli(capsys, *base, *extra)
        assert code == 0, err
        d = json.loads(out)
        times[name] = d["step_time_s"]
        if name.startswith("titan"):
            assert d["stack"]["framework"] == "torchtitan"
    assert times["titan-compiled"] < times["titan"]
    assert times["slow-net"] > times["megatron"]


def test_estimate_hf_config_path(capsys):
    code, out, err = run_cli(capsys, "estimate", "--model", str(HF / "Llama-3.1-8B" / "config.json"), "--gpu",
                             "h100-sxm", "--gpus", "8", "--zero", "3", "--recompute", "full", "--json")
    assert code == 0, err
    assert json.loads(out)["fits"] is True


def test_plan_round_trip_through_estimate(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    code, out, err = run_cli(capsys, "plan", *GPT3, "--gpus", "1024", "--global-batch", "1536", "--top", "2",
                             "--out", str(plan), "--json")
    assert code == 0, err
    best = json.loads(out)["best"]
    assert plan.is_file()
    code, out, err = run_cli(capsys, "estimate", "--plan", str(plan), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["step_time_s"] == pytest.approx(best["step_time_s"], rel=1e-9)
    assert {k: d["layout"][k] for k in ("tp", "pp", "dp", "vp", "micro_batch")} == \
        {k: best[k] for k in ("tp", "pp", "dp", "vp", "micro_batch")}
    # flags given with --plan override it (dp follows the new degrees)
    code, out, err = run_cli(capsys, "estimate", "--plan", str(plan), "--pp", "16", "--vp", "1", "--zero", "3",
                             "--json")
    assert code == 0, err
    L = json.loads(out)["layout"]
    assert (L["pp"], L["tp"] * L["pp"] * L["dp"] * L["cp"]) == (16, 1024)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("argv,needles", [
    (["--model", "gpt3-175", "--gpu", "h100-sxm", "--gpus", "8"], ["unknown model 'gpt3-175'", "gpt3-175b"]),
    (["--model", "gpt3-175b", "--gpu", "h100-sxm4", "--gpus", "8"], ["unknown GPU 'h100-sxm4'", "h100-sxm"]),
    (GPT3 + ["--gpus", "8", "--framework", "megatronn"], ["megatron"]),
    (GPT3 + ["--gpus", "8", "--fabric", "infiniban"], ["unknown fabric", "infiniband"]),
    (GPT3 + ["--gpus", "8", "--recompute", "fulll"], ["--recompute", "'full'"]),
    (GPT3 + ["--gpus", "8", "--precision", "bf61"], ["--precision", "bf16"]),
    (GPT3 + ["--gpus", "64", "--tp", "8", "--pp", "8", "--dp", "2"], ["tp*pp*dp*cp", "64 GPUs", "--dp"]),
    (GPT3 + ["--gpus", "64", "--tp", "5"], ["do not divide", "64"]),
    (GPT3 + ["--gpus", "80", "--tp", "5"], ["96 attention heads are not divisible by tp=5"]),
    (GPT3 + ["--gpus", "64", "--tp", "8", "--global-batch", "100"], ["global batch 100", "divisible"]),
    (GPT3 + ["--gpus", "0"], ["--gpus", "positive", "0"]),
    (GPT3 + ["--gpus", "-8"], ["--gpus", "positive"]),
    (GPT3 + ["--gpus", "8", "--seq-len", "-1"], ["--seq-len", "positive", "-1"]),
    (GPT3 + ["--gpus", "8", "--seq-len", "0"], ["--seq-len", "positive"]),
    (GPT3 + ["--gpus", "8", "--tp", "0"], ["--tp", "positive"]),
    (GPT3 + ["--gpus", "8", "--micro-batch", "0"], ["--micro-batch", "positive"]),
    (GPT3 + ["--gpus", "8", "--global-batch", "-4"], ["--global-batch", "positive"]),
    (GPT3 + ["--gpus", "8", "--zero", "5"], ["--zero", "0, 1, 2 or 3"]),
    (GPT3 + ["--gpus", "8", "--nic-gbps", "-5"], ["nic-gbps", "positive"]),
    (GPT3 + ["--gpus", "8", "--gpus-per-node", "0"], ["gpus-per-node", "positive"]),
    (["--gpu", "h100-sxm", "--gpus", "8"], ["--model"]),
    (["--model", "gpt3-175b", "--gpus", "8"], ["--gpu"]),
    (["--model", "gpt3-175b", "--gpu", "h100-sxm"], ["--gpus"]),
])
def test_estimate_bad_input(capsys, argv, needles):
    assert_one_line_error(*run_cli(capsys, "estimate", *argv), *needles)


def test_layout_that_does_not_fit_says_by_how_much_and_what_to_change(capsys):
    code, out, err = run_cli(capsys, "estimate", *GPT3, "--gpus", "64", "--tp", "8", "--global-batch", "64",
                             "--recompute", "selective")
    assert_one_line_error(code, out, err, "does not fit", "GiB per GPU", "80 GiB", "over", "--zero 3")
    needed = float(err.split("needs ")[1].split(" GiB")[0])
    assert needed > 80


def test_does_not_fit_even_with_single_changes(capsys):
    code, out, err = run_cli(capsys, "estimate", "--model", "llama3.1-405b", "--gpu", "h100-sxm", "--gpus", "8",
                             "--tp", "8")
    assert_one_line_error(code, out, err, "does not fit", "megacluster plan")


def test_json_mode_errors_print_no_json(capsys):
    code, out, err = run_cli(capsys, "estimate", *GPT3, "--gpus", "8", "--tp", "8", "--json")
    assert_one_line_error(code, out, err, "does not fit")


@pytest.mark.parametrize("text,suffix,needle", [
    ("model: gpt3-175b\ngpu: [h100\n", ".yaml", "malformed YAML"),
    ('{"model": "gpt3-175b", "gpu": }', ".json", "malformed JSON"),
    ("- just\n- a list\n", ".yaml", "expected a mapping"),
    ("model: gpt3-175b\ngpu: h100-sxm\n", ".yaml", "missing 'gpus'"),
    ("model: gpt3-175b\ngpu: h100-sxm\ngpus: 8\nlayout: {tp: 8, dp: 1, global_batch: 8, seq_len: 2048}\n"
     "colour: red\n", ".yaml", "unknown key 'colour'"),
    ("model: gpt3-175b\ngpu: h100-sxm\ngpus: 0\nlayout: {tp: 8, global_batch: 8, seq_len: 2048}\n", ".yaml",
     "gpus"),
])
def test_malformed_plan_files(tmp_path, capsys, text, suffix, needle):
    path = tmp_path / f"plan{suffix}"
    path.write_text(text)
    assert_one_line_error(*run_cli(capsys, "estimate", "--plan", str(path)), needle)


def test_missing_plan_file(tmp_path, capsys):
    assert_one_line_error(*run_cli(capsys, "estimate", "--plan", str(tmp_path / "none.yaml")), "not found")


@pytest.mark.parametrize("text,name,needle", [
    ('{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096,', "config.json", "malformed JSON"),
    ("name: broken\nn_layers: [1\n", "model.yaml", "malformed YAML"),
])
def test_malformed_model_files(tmp_path, capsys, text, name, needle):
    path = tmp_path / name
    path.write_text(text)
    assert_one_line_error(*run_cli(capsys, "estimate", "--model", str(path), "--gpu", "h100-sxm", "--gpus", "8"),
                          needle)


def test_model_file_not_found(tmp_path, capsys):
    assert_one_line_error(*run_cli(capsys, "estimate", "--model", str(tmp_path / "c.json"), "--gpu", "h100-sxm",
                                   "--gpus", "8"), "not found")


@pytest.mark.parametrize("argv,needle", [
    (["estimate", *GPT3, "--gpus", "x"], "--gpus"),
    (["estimate", *GPT3, "--gpus", "8", "--bogus"], "--bogus"),
    (["estimate", *GPT3, "--gpus"], "--gpus"),
    (["no-such-command"], "no-such-command"),
    (["catalog", "gpus", "h100-sxm", "extra"], "extra"),
])
def test_usage_errors_are_one_line_with_exit_2(capsys, argv, needle):
    assert_one_line_error(*run_cli(capsys, *argv), needle)


# ------------------------------------------------------------------------------------------ catalog
def test_catalog_overview_lists_every_kind(capsys):
    code, out, err = run_cli(capsys, "catalog")
    assert code == 0, err
    for kind in ("gpus", "models", "fabrics", "stacks"):
        assert kind in out
    assert "h100-sxm" in out and "llama3.1-405b" in out and "infiniband" in out and "torchtitan" in out


@pytest.mark.parametrize("kind,ids,figures", [
    ("gpus", ["a100-80gb", "h100-sxm", "h800", "b200", "mi300x"], ["989.4", "bf16 TFLOP/s", "HBM GiB"]),
    ("models", ["gpt3-175b", "llama3.1-405b", "deepseek-v3", "mixtral-8x7b"], ["175B", "params", "active"]),
    ("fabrics", ["infiniband", "roce"], ["efficiency", "leaf"]),
    ("stacks", ["megatron", "torchtitan"], ["flash", "hopper"]),
])
def test_catalog_kind_lists_ids_figures_and_sources(capsys, kind, ids, figures):
    code, out, err = run_cli(capsys, "catalog", kind)
    assert code == 0, err
    for text in ids + figures + ["sources"]:
        assert text in out, text


def test_catalog_entry_in_full(capsys):
    code, out, err = run_cli(capsys, "catalog", "models", "llama3-405b")           # an alias
    assert code == 0, err
    assert "llama3.1-405b" in out and "16384" in out and "arXiv:2407.21783" in out


def test_catalog_json(capsys):
    code, out, err = run_cli(capsys, "catalog", "gpus", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {e["id"] for e in d["gpus"]} == set(catalog.names("gpus"))
    assert all(e.get("source") for e in d["gpus"])


@pytest.mark.parametrize("argv,needles", [
    (["gpu"], ["unknown catalog kind 'gpu'", "gpus"]),
    (["gpus", "h100-sxm4"], ["h100-sxm"]),
    (["models", "lama3-8b"], ["llama3-8b"]),
])
def test_catalog_bad_names(capsys, argv, needles):
    assert_one_line_error(*run_cli(capsys, "catalog", *argv), *needles)


# ------------------------------------------------------------------------------------------ plan
def test_plan_json_shape_and_pins(capsys):
    code, out, err = run_cli(capsys, "plan", *GPT3, "--gpus", "1024", "--global-batch", "1536", "--top", "3",
                             "--tp", "4", "--precision", "bf16", "--json")
    assert code == 0, err
    d = json.loads(out)
    assert {"best", "top", "searched", "feasible", "seconds"} <= set(d)
    assert d["searched"] >= d["feasible"] >= len(d["top"]) == 3
    for row in [d["best"], *d["top"]]:
        assert {"tp", "pp", "dp", "micro_batch", "step_time_s", "mfu", "memory_gib_per_gpu"} <= set(row)
        assert row["tp"] == 4 and row["precision"] == "bf16"
        assert row["tp"] * row["pp"] * row["dp"] * row["cp"] == 1024
        assert row["global_batch"] == 1536
        assert row["memory_gib_per_gpu"] <= catalog.gpu("h100-sxm").hbm_gib
    steps = [r["step_time_s"] for r in d["top"]]
    assert steps == sorted(steps) and d["best"]["step_time_s"] == steps[0]


def test_plan_tables(capsys):
    code, out, err = run_cli(capsys, "plan", "--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "64",
                             "--tokens-per-step", str(2 ** 21), "--top", "3")
    assert code == 0, err
    assert "best layouts" in out and "why slower" in out and "best layout" in out and "memory per GPU" in out


def test_plan_sweep(capsys):
    code, out, err = run_cli(capsys, "plan", "--model", "llama3-8b", "--gpu", "h100-sxm", "--sweep-gpus",
                             "64,512", "--global-batch", "512", "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [r["n_gpus"] for r in rows] == [64, 512]
    for r in rows:
        assert r["mfu"] > 0 and r["days_per_trillion_tokens"] > 0
    code, out, err = run_cli(capsys, "plan", "--model", "llama3-8b", "--gpu", "h100-sxm", "--sweep-gpus",
                             "64,512", "--global-batch", "512")
    assert code == 0, err
    assert "days / 1T tokens" in out and "512" in out


def test_plan_refuses_a_model_too_large_with_the_minimum_gpu_count(capsys):
    assert_one_line_error(*run_cli(capsys, "plan", "--model", "llama3.1-405b", "--gpu", "h100-sxm", "--gpus", "8"),
                          "does not fit", "at least")


@pytest.mark.parametrize("argv,needles", [
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "64", "--tokens-per-step",
      "100000"], ["not both"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--sweep-gpus", "64,abc"], ["--sweep-gpus", "abc"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--sweep-gpus", "64,0"], ["--sweep-gpus", "positive"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--headroom", "1.5"], ["--headroom"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "0"], ["--gpus", "positive"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--seq-len", "-1"], ["--seq-len", "positive"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--top", "0"], ["--top", "positive"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--recompute", "some"], ["--recompute"]),
    (["--model", "llama3-8", "--gpu", "h100-sxm", "--gpus", "8"], ["llama3-8b"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch-min", "8"],
     ["--global-batch-max"]),
    (["--model", "llama3-8b", "--gpu", "h100-sxm", "--sweep-gpus", "8,64", "--out", "x.yaml"], ["--out"]),
])
def test_plan_bad_input(capsys, argv, needles):
    assert_one_line_error(*run_cli(capsys, "plan", *argv), *needles)


def test_parse_sizes():
    assert parse_sizes("1024, 4096,16k,100_000,2Ki") == [1024, 4096, 16000, 100000, 2048]


def test_search_progress_bar_runs_and_closes():
    p = ProgressBar("test", "layouts", enabled=True, after_s=0.0)
    p(10, 100)
    p(100, 100)
    assert p.bar is not None and p.calls == 2
    p.close()
    assert p.bar is None
    quiet = ProgressBar("test", enabled=False)
    quiet(1, 2)
    assert quiet.bar is None
