"""``--schedule``: the pipeline schedule a layout runs, on ``estimate`` and ``plan`` (kept in plan files); an
unknown name is one line and exit 2."""

from __future__ import annotations

import json

from cli_helpers import run_cli
from megacluster.plan_file import load_plan

BASE = ["--model", "llama3.1-70b", "--gpu", "h100-sxm", "--gpus", "256", "--global-batch", "256"]


def _step(capsys, *args) -> float:
    code, out, err = run_cli(capsys, "estimate", *BASE, "--tp", "8", "--pp", "4", *args, "--json")
    assert code == 0, err
    return json.loads(out)["step_time_s"]


def test_estimate_prices_the_schedule_given(capsys):
    one_f = _step(capsys)
    # ZB-H1 fills two thirds of 1F1B's bubble: the same layout, a shorter step
    assert _step(capsys, "--schedule", "zb-h1") < one_f
    assert _step(capsys, "--schedule", "1f1b") == one_f


def test_plan_keeps_the_schedule_in_its_file(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    code, _, err = run_cli(capsys, "plan", *BASE, "--tp", "8", "--pp", "4", "--schedule", "zb-h1", "--out", str(out))
    assert code == 0, err
    assert load_plan(out).stack.schedule == "zb-h1"


def test_an_unknown_schedule_is_one_line(capsys):
    code, out, err = run_cli(capsys, "estimate", *BASE, "--tp", "8", "--pp", "4", "--schedule", "gpipe")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: stack: schedule: Input should be '1f1b', 'dualpipe', 'dualpipe-v' or 'zb-h1', got 'gpipe'"]
