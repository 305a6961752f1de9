"""Figures of ``megacluster reliability``: goodput against the checkpoint interval with the Young/Daly optimum
marked, interruptions by cause, and the failure timeline of one simulated run."""

from __future__ import annotations

from typing import Any, Optional

from .campaign_figs import timeline_figure
from .common import PALETTE, grouped_sources, source_line, style
from .page import Panel


def interval_figure(res: Any) -> Panel:
    """Expected goodput against the checkpoint interval (the simulation's curve), with the simulated best,
    Young's, Daly's and the exact exponential optimum, and the interval the campaign used."""
    import plotly.graph_objects as go

    c = res.interval_curve or {}
    fig = go.Figure()
    if c.get("minutes"):
        fig.add_trace(go.Scatter(x=c["minutes"], y=[g * 100 for g in c["goodput"]], mode="lines",
                                 name="expected goodput (simulated)", line={"color": "#4C78A8", "width": 2.5},
                                 hovertemplate="every %{x:.3g} min: %{y:.2f}%<extra></extra>"))
    marks = [("simulated best", res.best_interval_minutes, res.goodput_expected_at_best, "star", "#E45756"),
             ("Daly", res.daly_minutes, res.goodput_expected_at_daly, "diamond", "#54A24B")]
    for name, x, g, sym, col in marks:
        if x > 0:
            fig.add_trace(go.Scatter(x=[x], y=[g * 100], mode="markers", name=f"{name}: {x:.3g} min, {g:.2%}",
                                     marker={"symbol": sym, "size": 15, "color": col,
                                             "line": {"color": "black", "width": 1}}))
    for name, x, dash in (("Young", res.young_minutes, "dot"), ("exact optimum, exponential",
                                                                res.exponential_optimum_minutes, "dash")):
        if x > 0:
            fig.add_vline(x=x, line={"color": "#888", "dash": dash})
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{name}: {x:.3g} min",
                                     line={"color": "#888", "dash": dash}))
    used = "best found" if res.interval_searched else "given"
    style(fig, f"Goodput against the checkpoint interval: {res.n_gpus:,} GPUs, {res.training_days:g} training "
               f"days, checkpoint stall {res.checkpoint.stall_s:.3g} s", "training minutes between checkpoints (log)",
          "expected goodput (%)", height=500)
    fig.update_xaxes(type="log")
    return Panel(fig, f"Expected goodput (training time / wall clock) at each interval, from the simulation's pool "
                      f"of attempts (common random numbers), with Young's sqrt(2 delta M) and Daly's formulas (M = "
                      f"mean time to failure, delta = checkpoint stall). The campaign checkpoints every "
                      f"{res.checkpoint_interval_minutes:.3g} min ({used}). {res.daly_comparison}",
                 ["Young 1974, A first order approximation to the optimum checkpoint interval (CACM 17(9))",
                  "Daly 2006, A higher order estimate of the optimum checkpoint interval for restart dumps "
                  "(FGCS 22(3))"])


def causes_figure(res: Any) -> Panel:
    """Mean interruptions per campaign by cause, coloured by group (planned ones hatched)."""
    import plotly.graph_objects as go

    from ...reliability.profiles import load_profile

    prof = load_profile(res.profile)
    comps = sorted(prof.components, key=lambda c: res.by_cause.get(c.id, 0.0))
    groups = list(dict.fromkeys(c.group for c in sorted(prof.components, key=lambda c: c.group)))
    fig = go.Figure()
    for i, g in enumerate(groups):
        cs = [c for c in comps if c.group == g]
        fig.add_trace(go.Bar(y=[c.name for c in cs], x=[res.by_cause.get(c.id, 0.0) for c in cs], orientation="h",
                             name=g, marker={"color": PALETTE[i % len(PALETTE)],
                                             "pattern": {"shape": ["/" if c.planned else "" for c in cs]}},
                             hovertemplate="%{y}: %{x:.1f} per campaign<extra>" + g + "</extra>"))
    anchors = "; ".join(f"{a['gpus']:,} GPUs: published MTTF {a['published_mttf_hours']:.3g} h, profile "
                        f"{a['model_mttf_hours']:.3g} h" for a in res.anchors)
    style(fig, f"Interruptions by cause: {res.interruptions_mean:,.1f} per campaign ({res.unexpected_interruptions_mean:,.1f} "
               f"unexpected, {res.planned_interruptions_mean:,.1f} planned; GPU {res.gpu_share:.0%} of unexpected)",
          "mean interruptions per campaign", "", height=max(360, 140 + 26 * len(comps)))
    fig.update_layout(barmode="stack")
    source_line(fig, f"Rates: profile {prof.id} ({prof.name}); sources per cause listed below")
    return Panel(fig, f"Mean count over {res.trials:,} trials of each cause of interruption (planned maintenance "
                      f"hatched), from the profile's rates per device-hour at {res.n_gpus:,} GPUs. "
                      + (f"Profile check: {anchors}." if anchors else ""),
                 grouped_sources([(c.name, c.source) for c in prof.components] +
                                 [(f"published MTTF at {a['gpus']:,} GPUs", a["source"]) for a in res.anchors]))


def reliability_report(res: Any, title: Optional[str] = None):
    """(title, subtitle, panels, notes) of a reliability report."""
    sub = (f"{res.n_gpus:,} GPUs, {res.training_days:g} failure-free training days, profile {res.profile}, "
           f"{res.trials:,} trials, seed {res.seed}, {res.distribution} failures\n{res.wall_clock_days_mean:,.2f} "
           f"wall-clock days (5%-95%: {res.wall_clock_days_p5:,.2f}-{res.wall_clock_days_p95:,.2f}), goodput "
           f"{res.goodput_mean:.2%}")
    panels = [interval_figure(res), causes_figure(res), timeline_figure(res.example_run, "run")]
    return (title or f"megacluster reliability: {res.n_gpus:,} GPUs for {res.training_days:g} days", sub,
            [p for p in panels if p is not None], [])
