"""Robustness of the command line (issue 21): interrupts, hostile files, non-finite numbers, huge counts."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch):
    def interrupted(**kw):
        raise KeyboardInterrupt

    monkeypatch.setattr("megacluster.report.plan_view.run_plan", interrupted)
    code, out, err = run_cli(capsys, "plan", "--model", "gpt3-175b", "--gpu", "h100-sxm", "--gpus", "1024")
    assert code == 130
    assert "interrupted" in _one_error_line(err)


# ------------------------------------------------------------------------------------------ hostile user files
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(8))
DEEP = "[" * 5000 + "]" * 5000
# each command with the flag that names a user file ({} is the file)
FILE_COMMANDS = {
    "model": ["estimate", "--model", "{}", "--gpu", "h100-sxm", "--gpus", "8"],
    "plan": ["estimate", "--plan", "{}"],
    "runs": ["validate", "--runs", "{}"],
    "site": ["campaign", "--scenario", "xai-colossus-100k", "--site", "{}", "--no-failures"],
    "profile": ["reliability", "--gpus", "1024", "--days", "10", "--profile", "{}", "--trials", "10"],
}
BAD_FILES = {   # name -> (suffix, content as bytes, fragment of the message)
    "binary": (".yaml", bytes(range(256)) * 4, "UTF-8"),
    "latin-1": (".yaml", "model: caf\xe9\n".encode("latin-1"), "UTF-8"),
    "alias bomb": (".yaml", BOMB.encode(), "alias"),
    "alias cycle": (".yaml", b"a: &a [1, *a]\n", "contains it"),
    "deep yaml": (".yaml", DEEP.encode(), "nest"),
    "yaml 100 deep": (".yaml", b"a: " + b"[" * 100 + b"]" * 100, "nested more than 64"),
    "deep json": (".json", DEEP.encode(), "nest"),
    "json 100 deep": (".json", b"[" * 100 + b"]" * 100, "nested more than 64"),
    "json nan": (".json", b'{"a": NaN}', "NaN"),
    "yaml nan": (".yaml", b"a: {b: .nan}\n", "a.b is nan"),
    "huge": (".yaml", b"# " + b"x" * (5 * 2 ** 20) + b"\n", "at most 4.0 MiB"),
    "40000-digit int": (".json", b'{"a": ' + b"9" * 40000 + b"}", "cannot read a value"),
}


@pytest.mark.parametrize("kind", sorted(FILE_COMMANDS))
@pytest.mark.parametrize("bad", sorted(BAD_FILES))
def test_hostile_files_are_one_line(tmp_path, capsys, kind, bad):
    suffix, content, fragment = BAD_FILES[bad]
    if (kind, bad) == ("runs", "yaml nan"):      # a runs file refuses non-finite numbers run by run
        fragment = "runs"
    f = tmp_path / f"input{suffix}"
    f.write_bytes(content)
    argv = [a.replace("{}", str(f)) for a in FILE_COMMANDS[kind]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, err[-500:])
    line = _one_error_line(err)
    assert fragment in line and len(line) < 400, line


@pytest.mark.parametrize("kind", sorted(FILE_COMMANDS))
@pytest.mark.parametrize("target, fragment", [("dir", "is a directory"), ("/dev/null", "not a regular file")])
def test_directories_and_devices_are_refused(tmp_path, capsys, kind, target, fragment):
    path = str(tmp_path) + "/" if target == "dir" else target
    if kind == "model" and target == "dir":      # a model folder is a checkpoint: its config.json is read
        (tmp_path / "config.json").mkdir()
        fragment = "is a directory"
    argv = [a.replace("{}", path) for a in FILE_COMMANDS[kind]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and fragment in _one_error_line(err), err


def test_unreadable_file(tmp_path, capsys, monkeypatch):
    f = tmp_path / "plan.yaml"
    f.write_text("model: x\n")

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", denied)
    code, out, err = run_cli(capsys, "estimate", "--plan", str(f))
    assert code == 2 and "permission denied" in _one_error_line(err)


def test_error_messages_quote_a_short_excerpt(tmp_path, capsys):
    f = tmp_path / "plan.yaml"
    f.write_text("model: " + "x" * 100_000 + "\ngpu: h100-sxm\ngpus: 8\nlayout: {}\n")
    code, out, err = run_cli(capsys, "estimate", "--plan", str(f))
    assert code == 2 and len(_one_error_line(err)) < 400


def test_validate_runs_names_the_nearest_set(capsys):
    code, out, err = run_cli(capsys, "validate", "--runs", "mroe")
    assert code == 2 and "did you mean the set 'more'" in _one_error_line(err)
    code, out, err = run_cli(capsys, "validate", "--runs", "MORE", "--json")
    assert code == 0 and json.loads(out)["runs"]


# ------------------------------------------------------------------------------------------ hangs, huge and non-finite
RELIABILITY = ["reliability", "--gpus", "16384", "--days", "54", "--trials", "20"]
CAMPAIGN = ["campaign", "--model", "llama3.1-8b", "--tokens", "1T", "--gpu", "h100-sxm", "--gpus", "64",
            "--no-failures"]


@pytest.mark.parametrize("argv, fragment", [
    (RELIABILITY + ["--checkpoint-interval", "inf"], "finite"),
    (RELIABILITY + ["--weibull-shape", "nan", "--distribution", "weibull"], "finite"),
    (RELIABILITY + ["--weibull-shape", "1e-9", "--distribution", "weibull"], "between 0.1 and 10"),
    (RELIABILITY + ["--days", "1e9"], "at most 36,500"),
    (RELIABILITY + ["--gpus", "1000000000"], "at most 10,000,000"),
    (RELIABILITY + ["--gpus", "99999999999999999999"], "at most 10,000,000"),
    (RELIABILITY + ["--checkpoint-interval", "1e-9"], "between one second"),
    (RELIABILITY + ["--rate-scale", "inf"], "finite"),
    (RELIABILITY + ["--seed", "-1"], "--seed must be a whole number from 0"),
    (RELIABILITY + ["--step-seconds", "1e-320"], "step_seconds must be at least 0.001"),
    (RELIABILITY + ["--write-gbs", "1e-9"], "write_gbs must be at least 0.001"),
    (CAMPAIGN + ["--global-batch", "99999999999999999999"], "at most 1,000,000,000"),
    (CAMPAIGN + ["--seq-len", "99999999999999999999"], "at most 100,000,000"),
    (RELIABILITY + ["--stall-seconds", "126277676.0"], "stall_seconds must be at most 86400"),
    (["reliability", "--gpus", "10000000", "--days", "1000"], "interruptions per run"),
    (CAMPAIGN[:3] + ["--tokens", "1e20"] + CAMPAIGN[5:], "at most 1e+16"),
    (CAMPAIGN[:3] + ["--tokens", "1e-30"] + CAMPAIGN[5:], "less than one training step"),
    (CAMPAIGN[:3] + ["--tokens", "1e999"] + CAMPAIGN[5:], "finite"),
    (CAMPAIGN[:7] + ["--gpus", "0"] + CAMPAIGN[9:], "--gpus must be positive"),
    (CAMPAIGN + ["--mfu", "nan"], "--mfu must be a finite number"),
    (CAMPAIGN + ["--pue", "nan"], "finite"),
    (CAMPAIGN + ["--goodput", "nan"], "finite"),
    (CAMPAIGN + ["--set", "pue=inf"], "assumption pue must be a finite number"),
    (CAMPAIGN + ["--mfu", "1e-9"], "mfu"),
    (["estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--nic-gbps", "1e-320"],
     "at least 1"),
    (["estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "99999999999999999999"],
     "at most 10,000,000"),
    (["estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch",
      "99999999999999999999"], "at most 1,000,000,000"),
    (["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "99999999999999999999"], "at most"),
    (["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--sweep-gpus", "8,99999999999999999999"], "at most"),
    (["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--headroom", "nan"], "finite"),
])
def test_ranges_are_checked_before_anything_runs(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, err[-300:])
    assert fragment in _one_error_line(err)


def test_a_huge_vocabulary_in_a_config_is_refused(tmp_path, capsys):
    cfg = json.loads(open("tests/data/hf/Llama-3.1-8B/config.json").read())
    cfg["vocab_size"] = int("9" * 400)
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    code, out, err = run_cli(capsys, "estimate", "--model", str(f), "--gpu", "h100-sxm", "--gpus", "8")
    assert code == 2 and "at most 100,000,000" in _one_error_line(err)


def test_poisson_tail_of_a_huge_cluster_is_finite():
    from megacluster.reliability.failures import spare_shortage_probability, spares_needed

    assert spares_needed(1000.0, 48.0) > 48_000           # exp(-48,000) underflowed: this never returned
    assert 0.0 <= spare_shortage_probability(1000.0, 48.0, 50_000) < 1e-9


def test_reliability_cost_is_bounded_with_a_note(monkeypatch):
    from megacluster.reliability import simulate

    monkeypatch.setattr(simulate, "MAX_ATTEMPTS", 200_000)
    r = simulate.simulate_reliability(16384, 300, trials=1000)
    assert 1 <= r.trials < 1000 and "trials instead of 1,000" in r.notes[0]
    assert r.trials * r.interruptions_mean <= 200_000


def test_json_output_is_strict():
    from megacluster.errors import UserError
    from megacluster.jsonout import dumps

    assert json.loads(dumps({"a": 1.5}))["a"] == 1.5
    with pytest.raises(UserError, match=r"not finite \(runs\[0\]\.error\)"):
        dumps({"runs": [{"error": float("nan")}]})


# ------------------------------------------------------------------------------------------ validate: one bad run
def _published_run(rid: str, model: dict | None = None, **spec):
    import copy

    from megacluster import catalog

    base = copy.deepcopy(next(r for r in catalog.load("runs")["runs"] if r["id"] == "nemo2407-llama3-70b-64gpu-fp8"))
    base["id"] = rid
    base["spec"].update(spec)
    base["model"].update(model or {})
    return base


@pytest.mark.parametrize("model, spec, fragment", [
    ({"name": 123}, {}, "model.name must be text, got 123"),
    ({}, {"stack": "megatron"}, "spec.stack must be a mapping of fields, got 'megatron'"),
    ({"moe": [1, 2]}, {}, "model.moe must be a mapping"),
    ({}, {"gpu": ["h100"]}, "spec.gpu must be text"),
    ({}, {"n_gpus": True}, "spec.n_gpus must be a whole number, got True"),
    ({}, {"tp": "eight"}, "spec.tp must be a whole number"),
    ({}, {"global_batch": 1.5}, "spec.global_batch must be a whole number"),
    ({"n_layers": int("9" * 400)}, {}, "larger than any count"),
    ({}, {"zero": 7}, "zero"),
    ({}, {"dp": 3, "tp": 4, "pp": 1, "cp": 1, "n_gpus": 8}, "degrees tp*pp*dp*cp = 4*1*3*1 = 12"),
    ({}, {"tp": 8, "pp": 1, "cp": 1, "dp": 1, "n_gpus": 2}, "cluster's 2 GPUs"),
    ({"n_layers": 2}, {"tp": 1, "pp": 64, "cp": 1, "dp": 1, "vp": 1, "n_gpus": 64}, "pp=64 is more than the model's 2"),
    ({}, {"cp": 2, "seq_len": 4097}, "not divisible by cp=2"),
])
def test_a_malformed_or_impossible_run_is_not_predicted_and_the_rest_are(tmp_path, capsys, model, spec, fragment):
    import yaml

    runs = [_published_run("good"), _published_run("bad", model, **spec)]
    f = tmp_path / "runs.yaml"
    f.write_text(yaml.safe_dump({"runs": runs}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(f), "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [r["id"] for r in data["runs"]] == ["good"]
    assert data["skipped"][0]["id"] == "bad" and fragment in data["skipped"][0]["reason"], data["skipped"]


# ------------------------------------------------------------------------------------------ plan --out
PLAN = ["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "64", "--top", "1"]


def test_plan_out_refuses_to_replace_a_file_that_is_not_a_plan(tmp_path, capsys):
    f = tmp_path / "important.txt"
    f.write_text("my notes\n")
    code, out, err = run_cli(capsys, *PLAN, "--out", str(f))
    assert code == 2 and "not a megacluster plan" in _one_error_line(err) and "--force" in err
    assert f.read_text() == "my notes\n"
    code, out, err = run_cli(capsys, *PLAN, "--out", str(f), "--force")
    assert code == 0 and f.read_text().startswith("# megacluster plan")
    code, out, err = run_cli(capsys, *PLAN, "--out", str(f))        # a plan may be replaced by a plan
    assert code == 0, err


def test_plan_out_is_atomic(tmp_path, capsys, monkeypatch):
    f = tmp_path / "plan.yaml"
    assert run_cli(capsys, *PLAN, "--out", str(f))[0] == 0
    before = f.read_text()

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken)
    code, out, err = run_cli(capsys, *PLAN[:-1], "2", "--out", str(f))
    assert code == 2 and "No space left" in _one_error_line(err)
    assert f.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]


def test_plan_with_a_model_file_loads_from_any_folder(tmp_path, capsys, monkeypatch):
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy("tests/data/hf/Llama-3.1-8B/config.json", models / "config.json")
    plans = tmp_path / "plans"
    plans.mkdir()
    monkeypatch.chdir(tmp_path)
    argv = ["plan", "--model", "models/config.json", "--gpu", "h100-sxm", "--gpus", "8", "--global-batch", "64",
            "--top", "1", "--out", "plans/p.yaml"]
    assert run_cli(capsys, *argv)[0] == 0
    assert "model: ../models/config.json" in (plans / "p.yaml").read_text()
    monkeypatch.chdir(plans)
    code, out, err = run_cli(capsys, "estimate", "--plan", "p.yaml", "--json")
    assert code == 0, err
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, out, err = run_cli(capsys, "estimate", "--plan", str(plans / "p.yaml"), "--json")
    assert code == 0, err


# ------------------------------------------------------------------------------------------ accepted nonsense, names
def _plan_file(tmp_path, layout: str, stack: str = "") -> str:
    f = tmp_path / "plan.yaml"
    f.write_text(f"model: llama3.1-8b\ngpu: h100-sxm\ngpus: 8\nlayout: {{{layout}}}\n" + (
        f"stack: {{{stack}}}\n" if stack else ""))
    return str(f)


@pytest.mark.parametrize("layout, stack, fragment", [
    ("tp: true, global_batch: 64, seq_len: 8192", "", "tp: expected a number, got True"),
    ("tp: 8, dp: 1, global_batch: 64, seq_len: 8192, sequence_parallel: 1", "", "sequence_parallel: expected true"),
    ("tp: 8, dp: 1, global_batch: 64, seq_len: 8192", "compile: 'yes'", "compile: expected true or false"),
    ("tp: 8, dp: 1, global_batch: 64, seq_len: 8192", "fp8_recipe: bogus", "unknown fp8 recipe 'bogus'"),
    ("tp: 8, dp: 1, global_batch: 64, seq_len: 8192, zero: 9", "", "layout: zero:"),
])
def test_nonsense_in_a_plan_is_refused(tmp_path, capsys, layout, stack, fragment):
    code, out, err = run_cli(capsys, "estimate", "--plan", _plan_file(tmp_path, layout, stack))
    assert code == 2 and fragment in _one_error_line(err)


def test_an_unknown_fp8_recipe_is_refused(capsys):
    code, out, err = run_cli(capsys, "estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8",
                             "--fp8-recipe", "bogus")
    assert code == 2 and "unknown fp8 recipe 'bogus'; use one of tensorwise" in _one_error_line(err)


def test_a_run_with_a_nan_reference_is_not_predicted_and_the_json_stays_strict(tmp_path, capsys):
    import yaml

    bad = _published_run("bad")
    bad["reference"]["tokens_per_s_per_gpu"] = float("nan")
    f = tmp_path / "runs.yaml"
    f.write_text(yaml.safe_dump({"runs": [_published_run("good"), bad]}))
    code, out, err = run_cli(capsys, "validate", "--runs", str(f), "--json")
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in --json output"))
    assert code == 0 and data["skipped"][0]["id"] == "bad" and "reference" in data["skipped"][0]["reason"]


def test_a_run_with_an_impossible_zero_names_the_field_not_the_class():
    from megacluster.validate import validate_runs

    out = validate_runs([_published_run("good"), _published_run("bad", zero=7)])
    reason = out["skipped"][0].reason
    assert "validation error for" not in reason and "zero" in reason


@pytest.mark.parametrize("argv, fragment", [
    (["catalog", "gpus", "H100-SXM"], "h100-sxm"),
    (["catalog", "fabrics", "IB"], "infiniband"),
    (["catalog", "stacks", "NeMo"], "megatron"),
    (["catalog", "GPUs", "h100"], "h100-sxm"),
])
def test_catalog_entries_resolve_like_estimate(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and fragment in out, err
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0 and json.loads(out)["entry"]["id"] == fragment
