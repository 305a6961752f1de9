"""What a newcomer tripped on (issue 19): each fixed behaviour, checked through the CLI as a user sees it."""

from __future__ import annotations

import json

import typer

from megacluster import cli
from cli_helpers import run_cli


def test_fp8_mfu_says_it_is_against_the_bf16_peak(capsys):
    code, out, _ = run_cli(capsys, "estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8",
                           "--precision", "fp8", "--global-batch", "32", "--zero", "3")
    assert code == 0 and "(against the BF16 peak)" in out
    code, out, _ = run_cli(capsys, "estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8",
                           "--precision", "bf16", "--global-batch", "32", "--zero", "3")
    assert code == 0 and "against the BF16 peak" not in out


def test_plan_mfu_column_names_its_peak(capsys):
    code, out, _ = run_cli(capsys, "plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8",
                           "--global-batch", "32", "--top", "2")
    assert code == 0 and "MFU (BF16 peak)" in out


def test_sweep_dp_reason_counts_the_whole_layout(monkeypatch):
    """The DP clause names all GPUs of the layout (16,384), not one pipeline stage's span (2,048)."""
    from megacluster import catalog, search
    from megacluster.cluster import make_cluster
    from megacluster.estimate import estimate
    from megacluster.specs import Layout

    m = catalog.model("llama3.1-405b")
    est = {}
    for n in (8192, 16384):
        c = make_cluster("h100-sxm", n)
        est[n] = (estimate(m, c, Layout(tp=8, pp=8, dp=n // 64, micro_batch=1, global_batch=4096, seq_len=8192,
                                        sequence_parallel=True), check=False), c)
    grow = iter([{"dp_comm": 1.0, "bubble": 1.0}, {"dp_comm": 2.0, "bubble": 1.0}])   # DP grows most
    monkeypatch.setattr(search, "_gpu_seconds_per_token", lambda e: next(grow))
    why = search.falloff_reason(est[8192][0], est[16384][0], est[8192][1], est[16384][1])
    assert "256-way gradient reductions, 64 of them at once over all 16,384 GPUs" in why


def test_every_option_has_help_text():
    cli._register()
    cmd = typer.main.get_command(cli.app)
    missing = [f"{name} {p.opts[0]}" for name, c in cmd.commands.items() for p in c.params
               if p.param_type_name == "option" and not (p.help or "").strip()]
    assert missing == []


def test_campaign_layout_and_water_units(capsys):
    code, out, _ = run_cli(capsys, "campaign", "--model", "llama3.1-8b", "--tokens", "1T", "--gpu", "h100-sxm",
                           "--gpus", "64", "--global-batch", "256", "--trials", "20")
    assert code == 0
    assert "TP" in out and "tp=" not in out                 # layouts as the other commands write them
    water = [ln for ln in out.splitlines() if ln.startswith(("│ on-site water ", "│ water, on-site"))]
    assert len(water) == 2 and all(" L (" in ln and "US gal)" in ln for ln in water)   # litres and US gallons alike


def test_reliability_uses_the_same_width_as_other_commands(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out, _ = run_cli(capsys, "reliability", "--gpus", "16384", "--days", "54", "--trials", "20")
    assert code == 0 and max(len(ln) for ln in out.splitlines()) > 80


def test_validate_summary_title_and_memory_column(capsys):
    from megacluster.report.validation_view import runs_table, summary_table
    from megacluster.validate import load_runs, validate_runs

    res = validate_runs(load_runs())
    assert not str(summary_table(res).title).startswith("error")
    headers = [str(c.header) for c in runs_table(res).columns]
    assert "GiB/GPU (published)" not in headers and any(h.startswith("GiB/GPU predicted") for h in headers)
