"""Plans from the planner run in the runtime: the README sequence end to end, the fit of a plan's layout to a
smaller run (one line saying what changed), estimate --plan with overrides, and the rank's share of the model."""

from __future__ import annotations

import json

import pytest

from megacluster import catalog
from megacluster.cli import main
from megacluster.runtime.model_spec import scale_model
from megacluster.runtime.plan import fit_layout
from megacluster.runtime.pipeline import SCHEDULES, schedule_problem

from runtime_helpers import cli

PLAN_405B = ["plan", "--model", "llama3.1-405b", "--gpu", "h100-sxm", "--gpus", "16384", "--global-batch", "2048",
             "--tp", "8"]


def test_fit_layout_to_one_process_and_a_scaled_model():
    base = catalog.model("llama3.1-405b")
    spec = scale_model(base, layers=2, d_model=256, vocab=256)
    lay = {"tp": 8, "pp": 2, "dp": 1024, "cp": 1, "ep": 1, "vp": 21, "micro_batch": 1, "global_batch": 2048,
           "seq_len": 8192}
    new, changes = fit_layout(lay, spec, 1, set(), scaled_width=256 / base.d_model)
    assert (new["tp"], new["pp"], new["dp"], new["vp"]) == (1, 1, 1, 1)
    assert new["seq_len"] == 128                   # 8192 x 256/16384: attention keeps its share of the FLOPs
    assert new["global_batch"] == 2                # the plan's 2 sequences per data-parallel rank
    assert changes == ["tp 8 -> 1", "pp 2 -> 1", "dp 1024 -> 1", "vp 21 -> 1", "seq len 8192 -> 128",
                       "global batch 2048 -> 2"]


def test_fit_layout_keeps_flags_and_the_pipeline():
    spec = scale_model(catalog.model("llama3.1-405b"), layers=4, d_model=256, heads=8, vocab=256)
    lay = {"tp": 8, "pp": 2, "dp": 1024, "vp": 21, "micro_batch": 1, "global_batch": 2048, "seq_len": 8192}
    new, changes = fit_layout(lay, spec, 4, {"seq_len"})
    # pp kept, tp cut to what is left (it divides 8 heads), vp to layers/pp, whole rounds of pp micro-batches
    assert (new["pp"], new["tp"], new["dp"], new["vp"], new["seq_len"]) == (2, 2, 1, 2, 8192)
    assert new["global_batch"] == 2 and new["global_batch"] // new["micro_batch"] % 2 == 0
    assert not any(c.startswith("seq len") for c in changes)


def test_schedule_table_names_the_step_models_schedules():
    """Every schedule the step model prices (stacks.yaml) is in the runtime's table."""
    import re

    text = (catalog.DATA / "stacks.yaml").read_text()
    names = set(re.findall(r"\bschedule: ([\w-]+)", text))
    assert {"1f1b", "dualpipe", "zb-h1"} <= names <= {k for k, v in SCHEDULES.items() if v.priced}
    assert schedule_problem("1f1b", 2, 2, 5, 8) is not None        # 5 micro-batches: not whole rounds of 2
    assert schedule_problem("1f1b", 2, 2, 4, 8) is None


def test_estimate_plan_with_overrides_rederives_vp(tmp_path, capsys):
    plan = tmp_path / "plan.yaml"
    main([*PLAN_405B, "--out", str(plan)])
    capsys.readouterr()
    main(["estimate", "--plan", str(plan), "--micro-batch", "2", "--json"])
    cap = capsys.readouterr()
    est = json.loads(cap.out)
    assert est["layout"]["vp"] == 1 and est["layout"]["micro_batch"] == 2
    assert cap.err.strip().startswith("vp ") and "-> 1: the plan's interleaved schedule no longer fits" in cap.err
    with pytest.raises(SystemExit):
        main(["estimate", "--plan", str(plan), "--micro-batch", "2", "--vp", "21"])
    assert "pass --vp 1, or a --global-batch that is a multiple of" in capsys.readouterr().err


def test_readme_sequence(tmp_path, capsys):
    """plan (405B on 16,384 H100) -> train --layers 2 --d-model 256 on one CPU process -> estimate --plan."""
    pytest.importorskip("torch")
    plan = tmp_path / "plan.yaml"
    main([*PLAN_405B, "--out", str(plan)])
    capsys.readouterr()
    r = cli(["--plan", str(plan), "--layers", "2", "--d-model", "256", "--steps", "3", "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert out["steps"] == 3 and out["layout"]["tp"] == out["layout"]["pp"] == out["layout"]["dp"] == 1
    fitted = [x for x in r.stderr.splitlines() if x.startswith("fitted the plan to this run:")]
    assert len(fitted) == 1 and "tp 8 -> 1" in fitted[0] and "vp" in fitted[0] and "vocab 128256 -> 256" in fitted[0]
    assert out["predicted"] is None and out["predicted_reason"].startswith("prediction skipped")
    main(["estimate", "--plan", str(plan), "--micro-batch", "2"])
    assert "vp " in capsys.readouterr().out


def test_json_summary_and_a_gpu_prediction_on_cpu():
    """--json prints one object; on CPU a prediction for --gpu says it is for that GPU, not this machine."""
    pytest.importorskip("torch")
    r = cli(["--steps", "3", "--seq-len", "32", "--global-batch", "2", "--micro-batch", "2", "--precision", "bf16",
             "--gpu", "h100-sxm", "--json"])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)                     # the whole of stdout is one JSON object
    for k in ("steps", "loss_first", "loss_last", "tokens_per_s", "step_time_s", "mfu", "peak_memory_gib",
              "layout", "predicted"):
        assert k in out
    assert out["steps"] == 3 and out["step_time_s"] > 0
    p = out["predicted"]
    assert p["hardware"] == "1 x h100-sxm" and p["comparable"] is False and p["step_time_s"] > 0
    assert "is for that GPU, not this machine (cpu)" in out["predicted_note"]
    assert "measured vs predicted" not in r.stderr


def test_a_rank_holds_its_shard_only(tmp_path):
    """Two FSDP ranks of a 51M-parameter model: each holds half of the parameters, and its memory never rose
    by the whole model's size while the model was built (built on the meta device, shards materialised)."""
    pytest.importorskip("torch")
    args = ["--layers", "4", "--d-model", "1024", "--heads", "8", "--steps", "1", "--seq-len", "32",
            "--global-batch", "2", "--micro-batch", "1", "--json"]
    two = cli([*args, "--dp", "2"], nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    out = json.loads(two.stdout)
    whole = 4 * (out["params"] + 9 * 1024)          # fp32 matrices and the 2 x 4 + 1 norm weights
    assert out["param_bytes_per_rank"] == pytest.approx(whole / 2, rel=0.01)
    grown = out["build_peak_bytes_per_rank"]
    if grown is not None:
        assert grown < 0.8 * whole, (grown, whole)
