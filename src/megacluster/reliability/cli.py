"""``megacluster reliability``: interruptions, checkpoints and goodput of a campaign (printing only)."""

from __future__ import annotations

import math
from typing import Optional

import typer
from rich.console import Console

from ..report.tables import wide_console
from rich.table import Table

from ..errors import UserError
from ..jsonout import print_json
from .failures import job_rates
from .profiles import load_profile
from .simulate import ReliabilityResult, simulate_reliability


def _bytes(n: float) -> str:
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= k:
            return f"{n / k:.2f} {unit}"
    return f"{n:.0f} B"


def _secs(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.2f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    if s >= 1:
        return f"{s:.1f} s"
    return f"{s * 1e3:.1f} ms"


def render(res: ReliabilityResult, console: Console) -> None:
    """Print a result as rich tables."""
    prof = load_profile(res.profile)
    for note in res.notes:
        console.print(f"note: {note}")
    console.print(f"[bold]Reliability of {res.n_gpus:,} GPUs for {res.training_days:g} training days[/bold]  "
                  f"profile [cyan]{res.profile}[/cyan] ({prof.name}); {res.trials:,} trials, seed {res.seed}, "
                  f"{res.distribution} failures")

    t = Table(title="Campaign", show_header=True)
    t.add_column("quantity")
    t.add_column("mean", justify="right")
    t.add_column("5% .. 95%", justify="right")
    t.add_row("wall-clock days", f"{res.wall_clock_days_mean:.2f}",
              f"{res.wall_clock_days_p5:.2f} .. {res.wall_clock_days_p95:.2f}")
    t.add_row("goodput (effective training time)", f"{res.goodput_mean:.2%}",
              f"{res.goodput_p5:.2%} .. {res.goodput_p95:.2%}")
    t.add_row("interruptions", f"{res.interruptions_mean:.1f}", f"95%: {res.interruptions_p95:.0f}")
    t.add_row("  unexpected", f"{res.unexpected_interruptions_mean:.1f}", "")
    t.add_row("  planned", f"{res.planned_interruptions_mean:.1f}", "")
    t.add_row("mean time to failure", "never" if res.mttf_hours is None else f"{res.mttf_hours:.2f} h", "")
    t.add_row("mean time between interruptions", "never" if res.mtbi_hours is None else f"{res.mtbi_hours:.2f} h",
              "")
    t.add_row("work lost (recomputed)", f"{res.lost_work_hours_mean:.1f} h", "")
    t.add_row("detect + restart + read + spare wait", f"{res.restart_hours_mean:.1f} h", "")
    t.add_row("checkpoint stalls", f"{res.checkpoint_stall_hours_mean:.1f} h", "")
    console.print(t)

    rates = job_rates(prof, res.n_gpus)
    per_hour = dict(zip(rates.ids, rates.per_hour))
    tc = Table(title="Interruptions by cause (mean per campaign)")
    for col, j in (("cause", "left"), ("group", "left"), ("count", "right"), ("share of unexpected", "right"),
                   ("rate / device-hour", "right"), ("per", "left"), ("source", "left")):
        tc.add_column(col, justify=j)
    unexpected = res.unexpected_interruptions_mean or 1.0
    for c in sorted(prof.components, key=lambda c: -res.by_cause.get(c.id, 0.0)):
        n = res.by_cause.get(c.id, 0.0)
        share = "planned" if c.planned else f"{n / unexpected:.1%}"
        tc.add_row(c.name, c.group, f"{n:.1f}", share, f"{prof.rate_per_device_hour(c):.3g}", c.per,
                   c.source if len(c.source) < 70 else c.source[:67] + "...")
    console.print(tc)
    console.print(f"GPU issues {res.gpu_share:.1%} and hardware {res.hardware_share:.1%} of unexpected "
                  f"interruptions; per hour at this size: {sum(per_hour.values()):.3f}")

    ck = res.checkpoint
    tk = Table(title="Checkpoint")
    tk.add_column("quantity")
    tk.add_column("value", justify="right")
    tk.add_row("size", f"{_bytes(ck.bytes_total)} ({ck.params / 1e9:.0f}B params x {ck.bytes_per_param:g} B)")
    tk.add_row("per GPU", _bytes(ck.bytes_per_gpu))
    tk.add_row("mode", ck.mode)
    tk.add_row("storage write rate", f"{ck.write_gbs:,.0f} GB/s")
    tk.add_row("write / read", f"{_secs(ck.write_s)} / {_secs(ck.read_s)}")
    tk.add_row("training stall per checkpoint", _secs(ck.stall_s))
    if ck.durable_lag_s:
        tk.add_row("durable after", _secs(ck.durable_lag_s))
    used = "best found" if res.interval_searched else "given"
    tk.add_row(f"interval ({used})", f"{res.checkpoint_interval_minutes:.2f} min")
    tk.add_row("best by simulation", f"{res.best_interval_minutes:.2f} min")
    tk.add_row("Young / Daly", f"{res.young_minutes:.2f} / {res.daly_minutes:.2f} min")
    tk.add_row("exact optimum, exponential model", f"{res.exponential_optimum_minutes:.2f} min")
    console.print(tk)
    console.print(res.daly_comparison)

    spare = ("unlimited (a replacement node is always free)" if res.spares is None else
             f"{res.spares} nodes; a hardware failure finds none free {res.spare_shortage_probability:.1%} "
             "of the time")
    console.print(f"Hot spares: {spare}; {res.spares_needed} nodes keep that under 1%.")

    if res.anchors:
        ta = Table(title="Profile check: published mean time to failure vs this profile")
        for col in ("GPUs", "published", "kind", "profile", "source"):
            ta.add_column(col)
        for a in res.anchors:
            ta.add_row(f"{a['gpus']:,}", f"{a['published_mttf_hours']:.3g} h", a["kind"],
                       f"{a['model_mttf_hours']:.3g} h", a["source"])
        console.print(ta)

    tas = Table(title="Assumptions")
    tas.add_column("name")
    tas.add_column("value", justify="right")
    tas.add_column("source")
    for k, v in res.assumptions.items():
        val = v.value
        if isinstance(val, float):
            val = f"{val:.4g}"
        tas.add_row(k, str(val), v.source)
    console.print(tas)


def reliability(
    gpus: int = typer.Option(..., "--gpus", "-n", help="GPUs in the job"),
    days: float = typer.Option(..., "--days", "-d", help="failure-free training days needed"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="catalog model id or config.json path "
                                        "(checkpoint size); default: the profile's reference job"),
    profile: str = typer.Option("llama3-h100", "--profile", "-p", help="profile id or a profile YAML file"),
    trials: int = typer.Option(1000, "--trials", help="Monte Carlo trials"),
    seed: int = typer.Option(0, "--seed", help="random seed of the Monte Carlo trials (same seed, same answer)"),
    checkpoint_interval: Optional[float] = typer.Option(None, "--checkpoint-interval",
                                                        help="training minutes between checkpoints "
                                                        "(default: the best found by simulation)"),
    checkpoint_mode: Optional[str] = typer.Option(None, "--checkpoint-mode", help="sync, async or memory"),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16, fp16, fp8 or fp32"),
    spares: Optional[int] = typer.Option(None, "--spares", help="hot-spare nodes (default: unlimited)"),
    distribution: Optional[str] = typer.Option(None, "--distribution", help="exponential, weibull or bursty"),
    weibull_shape: Optional[float] = typer.Option(None, "--weibull-shape", help="Weibull shape k of the "
                                                  "times between failures (1 = exponential; <1: early failures)"),
    burst_fraction: Optional[float] = typer.Option(None, "--burst-fraction",
                                                   help="share of failures that come in bursts (bursty)"),
    burst_mean_minutes: Optional[float] = typer.Option(None, "--burst-mean-minutes",
                                                       help="mean minutes between failures within a burst"),
    detect_minutes: Optional[float] = typer.Option(None, "--detect-minutes",
                                                   help="minutes from a failure to its detection"),
    restart_minutes: Optional[float] = typer.Option(None, "--restart-minutes",
                                                    help="minutes to restart the job from a checkpoint"),
    repair_hours: Optional[float] = typer.Option(None, "--repair-hours",
                                                 help="hours to repair or replace a failed node"),
    write_gbs: Optional[float] = typer.Option(None, "--write-gbs", help="aggregate storage write GB/s"),
    stall_seconds: Optional[float] = typer.Option(None, "--stall-seconds", help="stall per checkpoint, s"),
    rate_scale: Optional[float] = typer.Option(None, "--rate-scale", help="multiply unplanned failure rates"),
    step_seconds: Optional[float] = typer.Option(None, "--step-seconds",
                                                 help="training step time: checkpoints on step boundaries"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    html: Optional[str] = typer.Option(None, "--html", help="also write an interactive HTML report (one file, "
                                       "no network needed)"),
    png: Optional[str] = typer.Option(None, "--png", help="also write the main figure as a PNG (needs kaleido and "
                                      "Chromium)"),
) -> None:
    """Simulate failures, restarts and checkpoints of a training campaign: goodput and wall-clock days."""
    if gpus <= 0:
        raise UserError(f"--gpus must be positive, got {gpus}")
    if not math.isfinite(days) or days <= 0:
        raise UserError(f"--days must be positive, got {days}")
    overrides = {k: v for k, v in dict(
        checkpoint_mode=checkpoint_mode, precision=precision, spares=spares, distribution=distribution,
        weibull_shape=weibull_shape, burst_fraction=burst_fraction, burst_mean_minutes=burst_mean_minutes,
        detect_minutes=detect_minutes, restart_minutes=restart_minutes, repair_hours=repair_hours,
        write_gbs=write_gbs, stall_seconds=stall_seconds, rate_scale=rate_scale,
        step_seconds=step_seconds).items() if v is not None}
    from ..report.html import write_report
    from ..report.progress import progress_bar

    with progress_bar("simulating failures", unit="trials", quiet=as_json) as bar:
        res = simulate_reliability(gpus, days, profile=profile, model=model,
                                   checkpoint_interval_minutes=checkpoint_interval, trials=trials, seed=seed,
                                   progress=bar, **overrides)
    write_report("reliability", html, png, res)
    if as_json:
        print_json(res.model_dump(mode="json"))
        return
    render(res, wide_console())


def register(app: typer.Typer) -> None:
    app.command("reliability")(reliability)
