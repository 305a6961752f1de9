"""Robustness of the command line (issue 21): interrupts, hostile files, non-finite numbers, huge counts."""

from __future__ import annotations

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
