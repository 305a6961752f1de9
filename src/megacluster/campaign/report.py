"""Rich tables for campaigns: the figures, published comparisons, assumptions with sources, side by side."""

from __future__ import annotations

from typing import Any, Callable, Optional

from rich.console import Console
from rich.table import Table

from .campaign import CampaignResult
from .facility import liters_to_gallons


def _si(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}"


def _num(x: float) -> str:
    if abs(x) >= 1e15:
        return f"{x:.3g}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _usd(x: float) -> str:
    if abs(x) >= 1e9:
        return f"${x / 1e9:,.2f}B"
    if abs(x) >= 1e6:
        return f"${x / 1e6:,.1f}M"
    return f"${x:,.0f}"


def _iv(r: CampaignResult, key: str, fmt: Callable[[float], str]) -> str:
    """`` (80%: lo - hi)`` of one of the campaign's figures, where the step model gives it an interval."""
    iv = r.intervals.get(key)
    return "" if not iv else f" (80%: {fmt(iv[0])} - {fmt(iv[1])})"


def _big(x: float) -> str:
    for scale, word in ((1e9, "billion"), (1e6, "million")):
        if abs(x) >= scale:
            return f"{x / scale:,.3g} {word}"
    return f"{x:,.0f}"


def _water(liters: float) -> str:
    """Water in litres and US gallons, one unit system stated twice the same way."""
    return f"{_big(liters)} L ({_big(liters_to_gallons(liters))} US gal)"


# (label, getter, unit)
ROWS: list[tuple[str, Callable[[CampaignResult], Optional[str]], str]] = [
    ("wall clock, with failures", lambda r: f"{r.days:.1f}" + _iv(r, "days", "{:.1f}".format), "days"),
    ("failure-free", lambda r: f"{r.days_failure_free:.1f}" + _iv(r, "days_failure_free", "{:.1f}".format),
     "days"),
    ("goodput", lambda r: f"{r.goodput:.1%}", ""),
    ("interruptions", lambda r: None if r.interruptions is None else f"{r.interruptions:,.0f}", "mean"),
    ("GPU-hours", lambda r: f"{r.gpu_hours / 1e6:,.2f}M", "GPU-h"),
    ("training compute", lambda r: _si(r.training_flops), "FLOP"),
    ("MFU", lambda r: f"{r.mfu:.1%}" + (" (pinned)" if r.mfu_pinned else ""), "of BF16 dense peak"),
    ("MFU, step model", lambda r: f"{r.mfu_step_model:.1%}" + _iv(r, "mfu", "{:.1%}".format), ""),
    ("step time", lambda r: f"{r.step_time_s:.3g}" + _iv(r, "step_time_s", "{:.3g}".format), "s"),
    ("MFU over the wall clock", lambda r: f"{r.mfu_effective:.1%}", "MFU x goodput"),
    ("throughput", lambda r: f"{r.tokens_per_s / 1e6:,.2f}M" + _iv(r, "tokens_per_s", lambda x: f"{x / 1e6:,.2f}M"),
     "tokens/s"),
    ("GPU power, training mean", lambda r: f"{r.mean_gpu_power_w:.0f}", "W per GPU"),
    ("IT power, average / peak", lambda r: f"{r.avg_it_mw:.1f} / {r.peak_it_mw:.1f}", "MW"),
    ("facility power, average / peak", lambda r: f"{r.avg_facility_mw:.1f} / {r.peak_facility_mw:.1f}", "MW"),
    ("energy (facility)", lambda r: f"{r.energy_mwh:,.0f}", "MWh"),
    ("on-site water", lambda r: _water(r.water_onsite_liters / r.days), "per day"),
    ("water, on-site + off-site", lambda r: _water(r.water_total_liters), "whole run"),
    ("emissions, location-based", lambda r: f"{r.co2e_operational_tonnes:,.0f}", "tCO2e"),
    ("emissions, embodied", lambda r: None if r.co2e_embodied_tonnes is None else f"{r.co2e_embodied_tonnes:,.0f}",
     "tCO2e"),
    ("emissions, TDP method", lambda r: f"{r.co2e_tdp_method_tonnes:,.0f}", "tCO2e (GPU-h x TDP x PUE)"),
    ("capex: GPUs", lambda r: _usd(r.gpu_capex_usd), ""),
    ("capex: servers, network", lambda r: f"{_usd(r.server_capex_usd)}, {_usd(r.network_capex_usd)}", ""),
    ("capex: facility", lambda r: _usd(r.facility_capex_usd), ""),
    ("capex: total", lambda r: _usd(r.capex_usd), ""),
    ("capex amortised over the run", lambda r: _usd(r.capex_amortised_usd), ""),
    ("electricity", lambda r: _usd(r.electricity_usd), ""),
    ("cloud rental", lambda r: None if r.cloud_usd is None else _usd(r.cloud_usd), ""),
    ("cost of the run", lambda r: f"{_usd(r.cost_usd)} ({r.cost_basis})", ""),
]


def _short(text: str, limit: int = 220) -> str:
    """A source cut to ``limit`` characters at a word boundary."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def layout_text(lay: dict[str, Any]) -> str:
    """A campaign's layout as the other commands write it: ``TP8 PP8 DP1562 mb1 none Z1 bf16``, then the
    global batch and sequence length."""
    from ..specs import Layout

    try:
        label = Layout(**lay).label()
    except Exception:          # a layout from an older plan file: its degrees as given
        label = " ".join(f"{k.upper()}{lay[k]}" for k in ("tp", "pp", "dp", "cp", "ep") if k in lay)
    extra = [f"global batch {lay['global_batch']:,}" if "global_batch" in lay else "",
             f"sequence {lay['seq_len']:,}" if "seq_len" in lay else ""]
    return ", ".join([label] + [e for e in extra if e])


def _header(r: CampaignResult, title: Optional[str]) -> str:
    plan = layout_text(r.layout)
    params = f" ({r.params_total / 1e9:,.0f}B params)" if r.params_total else ""
    head = f"[bold]{title}[/bold]\n" if title else ""
    return (f"{head}model {r.model}{params}, {r.tokens / 1e12:,.2f}T tokens on {r.n_gpus:,} x {r.gpu} at "
            f"{r.site}\nplan ({r.plan_source}): {plan}")


def print_campaign(r: CampaignResult, console: Console, title: Optional[str] = None) -> None:
    console.print(_header(r, title))
    t = Table(title="Campaign", show_lines=False)
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_column("unit")
    for label, get, unit in ROWS:
        v = get(r)
        if v is not None:
            t.add_row(label, v, unit)
    console.print(t)
    if r.interval_basis:
        from ..report.tables import basis_text

        console.print(basis_text(r.interval_basis) + "; days hold the goodput fixed")
    if r.published:
        p = Table(title="Published figures vs model")
        for c in ("figure", "published", "model", "within", "source"):
            p.add_column(c, overflow="fold")
        for k, c in r.published.items():
            pub = (f"{_num(c['low'])} - {_num(c['high'])}" if c["tolerance"] is None else
                   f"{_num(float(c['published']))} +/- {float(c['tolerance']):.0%}")
            p.add_row(k, pub, _num(c["modelled"]), "[green]yes[/green]" if c["within"] else "[red]no[/red]",
                      c["source"])
        console.print(p)
    a = Table(title="Assumptions (override with flags or --set NAME=VALUE; full sources in --json)")
    a.add_column("name", overflow="fold")
    a.add_column("value", overflow="fold", max_width=26)
    a.add_column("unit", overflow="fold", max_width=16)
    a.add_column("source", overflow="fold", ratio=1)
    prev = None
    for k, v in r.assumptions.items():
        val = v.value if isinstance(v.value, str) else _num(float(v.value))
        a.add_row(k, str(val), v.unit, "(as above)" if v.source == prev else _short(v.source))
        prev = v.source
    console.print(a)
    for n in r.notes:
        console.print(f"note: {n}")


def print_compare(a: CampaignResult, b: CampaignResult, console: Console, na: str, nb: str) -> None:
    t = Table(title=f"{na} vs {nb}")
    t.add_column("quantity")
    t.add_column(na, justify="right")
    t.add_column(nb, justify="right")
    t.add_column("unit")
    for label, get, unit in [("model", lambda r: r.model, ""), ("GPUs", lambda r: f"{r.n_gpus:,} x {r.gpu}", ""),
                             ("site", lambda r: r.site, "")] + ROWS:
        va, vb = get(a), get(b)
        if va is None and vb is None:
            continue
        t.add_row(label, va or "-", vb or "-", unit)
    console.print(t)
    for name, r in ((na, a), (nb, b)):
        for n in r.notes:
            console.print(f"note ({name}): {n}")


def as_json(r: CampaignResult) -> dict[str, Any]:
    """The campaign's fields, and ``<figure>_interval: [lo, hi]`` beside each figure with an 80% interval."""
    return {**r.model_dump(mode="json"), **{f"{k}_interval": v for k, v in r.intervals.items()}}
