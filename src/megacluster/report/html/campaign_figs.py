"""Figures of ``megacluster campaign`` (and ``size``, whose result is a campaign): days, power over a step by
phase, energy / water / carbon / cost breakdowns, the failure timeline of one simulated run, and the scenario's
published figures against the model."""

from __future__ import annotations

from typing import Any, Optional

from .common import COLOURS, PALETTE, grouped_sources, source_line, style
from .page import Panel

MARKERS_UP_TO = 1500        # interruptions drawn one by one up to this count (SVG stays light)


def days_figure(r: Any) -> Panel:
    """Wall-clock days: failure-free training plus the time failures cost."""
    import plotly.graph_objects as go

    lost = max(r.days - r.days_failure_free, 0.0)
    fig = go.Figure([
        go.Bar(y=["campaign"], x=[r.days_failure_free], orientation="h", name="training, failure-free",
               marker_color=COLOURS["compute"], text=[f"{r.days_failure_free:,.1f} d"], textposition="inside"),
        go.Bar(y=["campaign"], x=[lost], orientation="h", name="lost to failures (recompute, restarts, checkpoints)",
               marker_color="#E45756", text=[f"{lost:,.1f} d"], textposition="inside")])
    pub = (r.published or {}).get("days")
    srcs = []
    if pub:
        fig.add_vrect(x0=float(pub["low"]), x1=float(pub["high"]), fillcolor="#54A24B", opacity=0.15, line_width=0,
                      annotation_text="published", annotation_position="top left")
        srcs.append(f"published days: {pub['source']}")
        source_line(fig, f"Published: {pub['source']}")
    style(fig, f"Wall-clock days: {r.days:,.1f} ({r.goodput:.1%} goodput), {r.gpu_hours / 1e6:,.2f}M GPU-hours",
          "days (wall clock)", "", height=300 if not pub else 330, legend_below=True)
    fig.update_layout(barmode="stack")
    return Panel(fig, f"{r.tokens / 1e12:,.2f}T tokens at {r.tokens_per_s / 1e6:,.2f}M tokens/s take "
                      f"{r.days_failure_free:,.1f} days without failures; the reliability model's goodput stretches "
                      "them to the wall clock.", srcs)


def power_figure(r: Any) -> Optional[Panel]:
    """Facility power through one training step, phase by phase, with the campaign's average and peak."""
    import plotly.graph_objects as go

    total = sum((r.step_phases_s or {}).values())
    phases = [(p, t) for p, t in (r.step_phases_s or {}).items() if t > 1e-9 * total and p in r.phase_facility_mw]
    if not phases:
        return None
    fig = go.Figure()
    t0 = 0.0
    for p, t in phases:
        mw = r.phase_facility_mw[p]
        fig.add_trace(go.Bar(x=[t0 + t / 2], width=[t], y=[mw], name=f"{p} ({t:.3g} s, {mw:,.1f} MW)",
                             marker={"color": COLOURS.get(p, "#999"), "line": {"color": "white", "width": 1}},
                             hovertemplate=f"{p}: {t:.4g} s at {mw:,.1f} MW<extra></extra>"))
        t0 += t
    for y, label, dash in ((r.avg_facility_mw, "campaign average (downtime included)", "dash"),
                           (r.peak_facility_mw, "peak", "dot")):
        fig.add_hline(y=y, line={"color": "#222", "dash": dash}, annotation_text=f"{label} {y:,.1f} MW",
                      annotation_position="top right")
    srcs = []
    pub = (r.published or {}).get("peak_facility_mw")
    if pub:
        fig.add_hrect(y0=float(pub["low"]), y1=float(pub["high"]), fillcolor="#54A24B", opacity=0.12, line_width=0,
                      annotation_text="published peak", annotation_position="bottom left")
        srcs.append(f"published peak power: {pub['source']}")
        source_line(fig, f"Published: {pub['source']}")
    style(fig, f"Facility power over one {sum(t for _, t in phases):.3g} s training step, by phase (PUE "
               f"{r.assumptions['pue'].value if 'pue' in r.assumptions else '?'})",
          "time within one step (s; phases grouped)", "facility power (MW)", height=460)
    fig.update_layout(bargap=0)
    fig.update_yaxes(rangemode="tozero")
    fr = grouped_sources([(f"{k} = {a.value:g}" if isinstance(a.value, (int, float)) else k, a.source)
                          for k, a in r.assumptions.items() if k.startswith("gpu_power_fraction") or k == "pue"])
    return Panel(fig, "Cluster power at the facility meter while the GPUs run each phase of a step (each phase's "
                      "total time drawn as one block: the GPU draws its phase's share of TDP, plus server, network "
                      "and storage overhead, times PUE). Restarts and checkpoint stalls run at idle power, which "
                      "lowers the campaign average.", srcs + fr)


def breakdown_figure(r: Any) -> Panel:
    """Energy, water, carbon and cost, each split into its parts."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=4, subplot_titles=("Energy (GWh)", "Water (million litres)",
                                                        "Emissions (kt CO2e)", "Cost (million USD)"))
    parts = [
        (1, [("IT equipment", r.energy_it_mwh / 1e3), ("cooling and losses (PUE)",
                                                       (r.energy_mwh - r.energy_it_mwh) / 1e3)]),
        (2, [("on-site (cooling)", r.water_onsite_liters / 1e6), ("off-site (power generation)",
                                                                  r.water_offsite_liters / 1e6)]),
        (3, [("operational, location-based", r.co2e_operational_tonnes / 1e3)] +
            ([("embodied", r.co2e_embodied_tonnes / 1e3)] if r.co2e_embodied_tonnes is not None else [])),
        (4, ([("cloud rental", r.cloud_usd / 1e6)] if r.cost_basis == "cloud" and r.cloud_usd is not None else
             [("hardware + facility, amortised", r.capex_amortised_usd / 1e6), ("electricity", r.electricity_usd / 1e6)])),
    ]
    for col, items in parts:
        for i, (name, v) in enumerate(items):
            fig.add_trace(go.Bar(x=[""], y=[v], name=name, marker_color=PALETTE[(col * 3 + i) % len(PALETTE)],
                                 text=[f"{name}<br>{v:,.3g}"], textposition="inside", textangle=0, showlegend=False,
                                 hovertemplate=f"{name}: %{{y:,.4g}}<extra></extra>"), row=1, col=col)
    fig.add_trace(go.Scatter(x=[""], y=[r.co2e_tdp_method_tonnes / 1e3], mode="markers", showlegend=False,
                             marker={"symbol": "line-ew-open", "size": 40, "color": "#222", "line": {"width": 3}},
                             name="TDP method", hovertemplate="GPU-hours x TDP x PUE x grid: %{y:,.4g} kt"
                             "<extra></extra>"), row=1, col=3)
    style(fig, f"Energy {r.energy_mwh / 1e3:,.3g} GWh, water {r.water_total_liters / 1e9:,.3g} billion L, "
               f"emissions {r.co2e_tonnes / 1e3:,.3g} kt CO2e, cost ${r.cost_usd / 1e6:,.4g}M ({r.cost_basis})",
          "", "", height=520, legend=False)
    fig.update_layout(barmode="stack")
    for c, unit in enumerate(("GWh", "million litres", "kt CO2e", "million USD"), start=1):
        fig.update_yaxes(title_text=unit, row=1, col=c, rangemode="tozero")
    keys = ("pue", "wue_l_per_kwh", "grid_water_l_per_kwh", "grid_gco2_per_kwh", "electricity_usd_per_kwh",
            "gpu_price_usd", "hardware_life_years", "cloud_usd_per_gpu_hour")
    srcs = grouped_sources([(f"{k} = {r.assumptions[k].value:g} {r.assumptions[k].unit}", r.assumptions[k].source)
                            for k in keys if k in r.assumptions and isinstance(r.assumptions[k].value, (int, float))])
    return Panel(fig, "Facility energy (IT energy x PUE), on-site cooling water (IT energy x WUE) and off-site "
                      "water of the power generation, location-based operational emissions (the black tick: the "
                      "model-card method, GPU-hours x TDP x PUE x grid intensity), and the run's cost. Capital "
                      f"cost of the cluster: ${r.capex_usd / 1e9:,.3g}B (GPUs ${r.gpu_capex_usd / 1e9:,.3g}B).",
                 srcs)


def _cause_names(profile: Optional[str]) -> dict[str, tuple[str, str]]:
    """Cause id -> (name, group) from the reliability profile (ids themselves if it cannot be read)."""
    try:
        from ...reliability.profiles import load_profile

        return {c.id: (c.name, c.group) for c in load_profile(profile or "llama3-h100").components}
    except Exception:
        return {}


def timeline_figure(run: Optional[dict[str, Any]], what: str = "campaign") -> Optional[Panel]:
    """One simulated run: training done against wall clock (with the work each failure loses), and the
    interruptions so far by cause group."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not run:
        return None
    names = _cause_names(run.get("profile"))
    n = len(run["cause"])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.08)
    xs, ys = [0.0], [0.0]
    p = 0.0
    detail = n <= MARKERS_UP_TO
    for t, x, w, ls, d in zip(run["start_h"], run["run_h"], run["work_h"], run["lost_h"], run["down_h"]):
        if detail:
            xs += [(t + x) / 24, (t + x) / 24, (t + x + d) / 24]
            ys += [(p + w + ls) / 24, (p + w) / 24, (p + w) / 24]
        else:
            xs.append((t + x + d) / 24)
            ys.append((p + w) / 24)
        p += w
    end = run.get("end_h")
    if end is not None:
        xs.append(end / 24)
        ys.append((p + run.get("last_work_h", 0.0)) / 24)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="training done (days of work kept)",
                             line={"color": COLOURS["compute"], "width": 1.5},
                             hovertemplate="day %{x:.2f}: %{y:.2f} days of training<extra></extra>"), row=1, col=1)
    groups: dict[str, list[float]] = {}
    for t, x, c in zip(run["start_h"], run["run_h"], run["cause"]):
        groups.setdefault(names.get(c, (c, c))[1], []).append((t + x) / 24)
    for i, (g, days) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1]))):
        fig.add_trace(go.Scatter(x=[0.0] + days, y=list(range(len(days) + 1)), mode="lines", line_shape="hv",
                                 name=f"{g} ({len(days):,})", line={"color": PALETTE[i % len(PALETTE)]},
                                 hovertemplate="day %{x:.2f}: %{y} " + g + " interruptions<extra></extra>"),
                      row=2, col=1)
    if detail and n:
        ts = [(t + x) / 24 for t, x in zip(run["start_h"], run["run_h"])]
        done = [ys[1 + 3 * i] for i in range(n)]
        fig.add_trace(go.Scatter(x=ts, y=done, mode="markers", name="interruption", showlegend=False,
                                 marker={"size": 4, "color": "#E45756", "opacity": 0.7},
                                 customdata=[[names.get(c, (c, c))[0], ls, d] for c, ls, d in
                                             zip(run["cause"], run["lost_h"], run["down_h"])],
                                 hovertemplate="day %{x:.2f}: %{customdata[0]}<br>lost %{customdata[1]:.2f} h of "
                                               "work, down %{customdata[2]:.2f} h<extra></extra>"), row=1, col=1)
    wall = (end / 24) if end is not None else xs[-1]
    style(fig, f"Failure timeline of one simulated {what}: {n:,} interruptions over {wall:,.1f} wall-clock days",
          "", "", height=560)
    fig.update_xaxes(title_text="wall-clock days", row=2, col=1)
    fig.update_yaxes(title_text="training done (days)", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="interruptions so far", row=2, col=1, rangemode="tozero")
    cap = ("One Monte Carlo draw of the reliability model (the report's summary figures are means over all trials): "
           "training progress, with each failure dropping the work since the last durable checkpoint, the flat "
           "stretches being detection, restart and checkpoint reading; below, the interruptions so far by cause "
           f"group (profile {run.get('profile', '?')}).")
    if not detail:
        cap += f" With {n:,} interruptions the line joins the restarts (individual drops are too small to see)."
    if end is None:
        cap += " The draw was cut after its first 20,000 interruptions."
    return Panel(fig, cap, [f"failure rates by cause: reliability profile {run.get('profile', '?')} "
                            "(megacluster reliability; sources per cause in its report)"])


def _number(v: Any) -> Optional[float]:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def published_figure(r: Any) -> Optional[Panel]:
    """Each published figure of the scenario against the model: model / published, with the published band."""
    import plotly.graph_objects as go

    pub = r.published or {}
    rows = []
    for key, c in pub.items():
        lo, hi, mod = _number(c.get("low")), _number(c.get("high")), _number(c.get("modelled"))
        mid = _number(c.get("published"))
        if mid is None and lo is not None and hi is not None:
            mid = (lo + hi) / 2
        if None in (lo, hi, mod, mid) or mid == 0:
            continue
        rows.append((key, mod / mid, lo / mid, hi / mid, mod, lo, hi, bool(c.get("within")), c.get("source", "")))
    if not rows:
        return None
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[1.0] * len(rows), y=[k for k, *_ in rows], mode="markers", name="published",
                             marker={"symbol": "line-ns-open", "size": 16, "color": "#222"},
                             error_x={"type": "data", "symmetric": False, "array": [h - 1 for _, _, _, h, *_ in rows],
                                      "arrayminus": [1 - lo for _, _, lo, *_ in rows], "color": "#54A24B",
                                      "thickness": 6, "width": 0},
                             customdata=[[lo, hi] for *_, lo, hi, _, _ in rows],
                             hovertemplate="%{y}: published %{customdata[0]:.4g} .. %{customdata[1]:.4g}"
                                           "<extra></extra>"))
    fig.add_trace(go.Scatter(x=[x for _, x, *_ in rows], y=[k for k, *_ in rows], mode="markers", name="model",
                             marker={"size": 13, "color": ["#54A24B" if w else "#E45756" for *_, w, _ in rows],
                                     "line": {"color": "black", "width": 1}},
                             customdata=[[m] for *_, m, _, _, _, _ in rows],
                             hovertemplate="%{y}: model %{customdata[0]:.4g} (%{x:.2f} x published)<extra></extra>"))
    fig.add_vline(x=1.0, line={"color": "#888", "dash": "dot"})
    within = sum(1 for *_, w, _ in rows if w)
    style(fig, f"Published figures vs the model: {within} of {len(rows)} within the published band",
          "model / published (the green bar: the published band)", "", height=max(300, 120 + 45 * len(rows)))
    source_line(fig, "Sources: " + "; ".join(s.split(" - ")[0] for *_, s in rows))
    return Panel(fig, "For each figure the scenario's sources publish, the model's value divided by the published "
                      "one (green: inside the published range or tolerance, red: outside).",
                 [f"{k}: {s}" for k, *_, s in rows])


def campaign_panels(r: Any) -> list[Panel]:
    panels = [days_figure(r), breakdown_figure(r), power_figure(r), timeline_figure(r.failure_timeline_hours),
              published_figure(r)]
    return [p for p in panels if p is not None]


def _subtitle(r: Any) -> str:
    lay = r.layout or {}
    plan = " ".join(f"{k}={lay[k]}" for k in ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch",
                                              "seq_len") if k in lay)
    return (f"{r.model}, {r.tokens / 1e12:,.2f}T tokens on {r.n_gpus:,} x {r.gpu} at {r.site}; plan "
            f"({r.plan_source}): {plan}\n{r.days:,.1f} days, MFU {r.mfu:.1%}, goodput {r.goodput:.1%}, "
            f"{r.energy_mwh:,.0f} MWh, ${r.cost_usd / 1e6:,.4g}M")


def campaign_report(r: Any, title: Optional[str] = None):
    """(title, subtitle, panels, notes) of a campaign report."""
    head = title or (f"scenario {r.scenario}" if r.scenario else f"{r.model} on {r.n_gpus:,} x {r.gpu}")
    return f"megacluster campaign: {head}", _subtitle(r), campaign_panels(r), list(r.notes)


def compare_report(a: Any, b: Any, name_a: str, name_b: str):
    """Two campaigns one after the other (each figure titled with its scenario)."""
    panels = []
    for name, r in ((name_a, a), (name_b, b)):
        for p in campaign_panels(r):
            p.fig.update_layout(title_text=f"{name}: {p.fig.layout.title.text}")
            panels.append(p)
    sub = f"{name_a}: {_subtitle(a)}\n{name_b}: {_subtitle(b)}"
    notes = [f"{name_a}: {n}" for n in a.notes] + [f"{name_b}: {n}" for n in b.notes]
    return f"megacluster campaign: {name_a} vs {name_b}", sub, panels, notes


def size_report(r: Any, title: Optional[str] = None):
    """``megacluster size``: its result is a campaign (the cluster sized for a model and a deadline)."""
    t, sub, panels, notes = campaign_report(r, title)
    return t.replace("megacluster campaign", "megacluster size", 1), sub, panels, notes
