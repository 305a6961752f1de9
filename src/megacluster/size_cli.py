"""``megacluster size``: how big a cluster, how long, how much (the inverse problem). Parsing and printing
only; the work is :func:`megacluster.api.size` (:mod:`megacluster.sizing`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .errors import UserError
from .jsonout import print_json


def _usd(x: float) -> str:
    return f"${x / 1e9:,.2f}B" if abs(x) >= 1e9 else f"${x / 1e6:,.1f}M"


def print_size(r, console) -> None:
    """The answer, the binding limit, the options around it, the bounds and laws used."""
    console.print(f"[bold]{r.answer}[/bold]")
    console.print(f"binding limit: {r.binding_text}")
    if r.slack:
        console.print("limits: " + "; ".join(r.slack.values()))
    console.print(f"layout {r.layout}, global batch {r.global_batch:,} x {r.seq_len:,} tokens; MFU {r.mfu:.1%} of "
                  f"the BF16 peak, goodput {r.goodput:.1%}; cost of the run {_usd(r.cost_usd)} (amortised capex + "
                  f"electricity)")
    t = Table(title="the answer and the next-best options", title_justify="left")
    show_model = any(o.params_total for o in r.options if o.note != "the answer")
    for col, just in ((("model", "left"),) if show_model else ()) + (
                      ("GPUs", "right"), ("layout", "left"), ("batch", "right"), ("days", "right"),
                      ("MFU", "right"), ("goodput", "right"), ("peak MW", "right"), ("capex", "right"),
                      ("run cost", "right"), ("limits met", "left"), ("", "left")):
        t.add_column(col, justify=just)
    for o in r.options:
        met = ", ".join(f"{k} {'yes' if v else '[red]no[/red]'}" for k, v in o.meets.items())
        lead = ([f"{o.params_total / 1e9:,.0f}B on {o.tokens / 1e12:,.1f}T" if o.params_total else ""]
                if show_model else [])
        t.add_row(*lead, f"{o.n_gpus:,}", o.layout, f"{o.global_batch:,}", f"{o.days:,.1f}", f"{o.mfu:.1%}",
                  f"{o.goodput:.1%}", f"{o.peak_facility_mw:,.1f}", _usd(o.capex_usd), _usd(o.cost_usd), met,
                  o.note, style="bold" if o.note == "the answer" else None)
    console.print(t)
    if r.scaling_law:
        console.print(f"scaling law: {r.scaling_law}")
    for n in r.notes:
        console.print(f"note: {n}")
    if r.interval and "days" in r.interval:
        lo, hi = r.interval["days"]
        console.print(f"interval: {lo:,.1f}-{hi:,.1f} days ({r.interval_note})")
    else:
        console.print(f"interval: none ({r.interval_note})")
    console.print(f"({r.evaluated} campaigns evaluated in {r.seconds:.1f} s)")


def size(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="catalog model id or config.json path; "
                                        "leave out to size the model (compute-optimal) too"),
    tokens: Optional[str] = typer.Option(None, "--tokens", "-t", help="training tokens, e.g. 15.6T; leave out "
                                         "for the most a cluster trains in --days"),
    gpu: str = typer.Option("h100-sxm", "--gpu", "-g", help="catalog GPU id"),
    days: Optional[float] = typer.Option(None, "--days", "-d", help="deadline: wall-clock days, failures counted"),
    max_mw: Optional[float] = typer.Option(None, "--max-mw", help="facility power limit at peak, MW"),
    budget_usd: Optional[str] = typer.Option(None, "--budget-usd", help="capital budget (GPUs, servers, network, "
                                             "facility), USD, e.g. 100B or 1.5e9"),
    gpus: Optional[int] = typer.Option(None, "--gpus", "-n", help="cluster size: at most this many GPUs"),
    compute: Optional[str] = typer.Option(None, "--compute", help="compute budget in FLOP (e.g. 3.8e25): the "
                                          "scaling law picks the model and tokens"),
    law: str = typer.Option("chinchilla", "--law", help="compute-optimal scaling law: chinchilla (Hoffmann et "
                            "al. 2022) or llama3 (Llama 3 paper)"),
    site: str = typer.Option("us-average", "--site", help="site id (`megacluster catalog sites`) or a site YAML"),
    fabric: Optional[str] = typer.Option(None, "--fabric", help="scale-out fabric id"),
    framework: Optional[str] = typer.Option(None, "--framework", help="software stack (megatron, torchtitan, ...)"),
    precision: str = typer.Option("bf16", "--precision", help="bf16, fp8, or any (the planner chooses)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="sequence length (default: the model's)"),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="fix the global batch (sequences); "
                                               "default: chosen within the batch-size law's bound"),
    scenario: Optional[str] = typer.Option(None, "--scenario", help="a sizing scenario (`megacluster catalog "
                                           "scenarios`)"),
    no_failures: bool = typer.Option(False, "--no-failures", help="leave failures out (goodput 1)"),
    trials: int = typer.Option(200, "--trials", help="Monte Carlo trials of the reliability model for the answer"),
    seed: int = typer.Option(0, "--seed", help="random seed of the reliability Monte Carlo"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write the answer's campaign as an interactive "
                                        "HTML report (one file, no network needed)"),
    png: Optional[Path] = typer.Option(None, "--png", help="also write the main figure as a PNG (needs kaleido "
                                       "and Chromium)"),
) -> None:
    """How big, how long, how much: the smallest cluster that trains a model by a deadline within power and
    budget limits, or the largest model (or most tokens) a cluster, power or budget trains in D days."""
    from . import api
    from .campaign.cli import parse_count
    from .report.tables import wide_console

    if scenario is not None:
        if any(x is not None for x in (model, tokens, compute, days, max_mw, budget_usd, gpus)):
            raise UserError("--scenario fixes the model and limits; drop --model/--tokens/--compute/--days/"
                            "--max-mw/--budget-usd/--gpus")
        r = api.size(scenario=scenario, reliability=not no_failures, trials=trials, seed=seed)
    else:
        r = api.size(model=model, tokens=parse_count(tokens, "tokens") if tokens else None, gpu=gpu, days=days,
                     max_mw=max_mw, budget_usd=parse_count(budget_usd.lstrip("$"), "budget-usd") if budget_usd
                     else None, gpus=gpus, compute_flops=parse_count(compute, "compute") if compute else None,
                     law=law, site=site, fabric=fabric, framework=framework, precision=precision, seq_len=seq_len,
                     global_batch=global_batch, reliability=not no_failures, trials=trials, seed=seed)
    if (html or png) and r.campaign is not None:
        from .report.html import write_report

        write_report("size", html, png, r.campaign, r.answer)
    if as_json:
        print_json(r.to_dict())
        return
    print_size(r, wide_console())


def register(app: typer.Typer) -> None:
    app.command("size")(size)
