"""Figures of ``megacluster validate``: predicted against measured tokens/s per GPU with the y = x line, and the
error of each run, coloured by software stack and marked by GPU generation, with prediction intervals where
the result carries them."""

from __future__ import annotations

from typing import Any, Iterable, Optional

from .common import PALETTE, grouped_sources, source_line, style
from .page import Panel

SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon", "pentagon", "star-triangle-up"]
PATTERNS = ["", "/", "x", ".", "\\", "+", "-", "|"]


def _get(r: Any, key: str) -> Any:
    return r.get(key) if isinstance(r, dict) else getattr(r, key, None)


def interval(r: Any) -> Optional[tuple[float, float]]:
    """The run's prediction interval (low, high) in tokens/s per GPU, where the result has one: a pair, or a
    mapping with low/high (or lo/hi, p5/p95)."""
    iv = _get(r, "interval")
    if iv is None:
        return None
    if isinstance(iv, dict):
        for lo, hi in (("low", "high"), ("lo", "hi"), ("p5", "p95"), ("lower", "upper")):
            if lo in iv and hi in iv:
                return float(iv[lo]), float(iv[hi])
        return None
    if hasattr(iv, "model_dump"):
        return interval({"interval": iv.model_dump()})
    try:
        lo, hi = iv
        return float(lo), float(hi)
    except (TypeError, ValueError):
        return None


def source_text(run: dict) -> str:
    """A run's source in one line (title and locator of the runs file's ``source``)."""
    s = run.get("source")
    if isinstance(s, dict):
        return ", ".join(str(s[k]) for k in ("title", "locator") if s.get(k))
    return str(s or "")


def scatter_figure(runs: list, sources: dict[str, str]) -> Panel:
    """Predicted against measured tokens/s per GPU, one colour per stack and one marker per GPU generation."""
    import plotly.graph_objects as go

    stacks = sorted({_get(r, "framework") for r in runs})
    gens = sorted({_get(r, "generation") for r in runs})
    fig = go.Figure()
    lo = min(min(_get(r, "reference"), _get(r, "predicted")) for r in runs) * 0.7
    hi = max(max(_get(r, "reference"), _get(r, "predicted")) for r in runs) * 1.4
    for k, dash, name in ((1.0, "solid", "y = x"), (1.25, "dot", "+/-25%"), (0.8, "dot", None),
                          (1.1, "dash", "+/-10%"), (1 / 1.1, "dash", None)):
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo * k, hi * k], mode="lines", name=name or "", showlegend=bool(name),
                                 line={"color": "#444" if k == 1 else "#AAA", "dash": dash, "width": 1.5 if k == 1
                                       else 1}, hoverinfo="skip", legendgroup=f"band{dash}"))
    any_iv = False
    for i, st in enumerate(stacks):
        for j, g in enumerate(gens):
            rs = [r for r in runs if _get(r, "framework") == st and _get(r, "generation") == g]
            if not rs:
                continue
            ivs = [interval(r) for r in rs]
            err = None
            if any(v is not None for v in ivs):
                any_iv = True
                err = {"type": "data", "symmetric": False, "color": PALETTE[i % len(PALETTE)],
                       "array": [(v[1] - _get(r, "predicted")) if v else 0 for r, v in zip(rs, ivs)],
                       "arrayminus": [(_get(r, "predicted") - v[0]) if v else 0 for r, v in zip(rs, ivs)]}
            fig.add_trace(go.Scatter(
                x=[_get(r, "reference") for r in rs], y=[_get(r, "predicted") for r in rs], mode="markers",
                name=f"{st}, {g}", error_y=err,
                marker={"size": 11, "color": PALETTE[i % len(PALETTE)], "symbol": SYMBOLS[j % len(SYMBOLS)],
                        "line": {"color": "black", "width": 0.7}},
                customdata=[[_get(r, "id"), _get(r, "layout"), _get(r, "error") * 100, _get(r, "n_gpus")]
                            for r in rs],
                hovertemplate="%{customdata[0]}<br>%{customdata[3]:,} GPUs, %{customdata[1]}<br>measured %{x:,.0f}, "
                              "predicted %{y:,.0f} tokens/s/GPU (%{customdata[2]:+.1f}%)<extra></extra>"))
    style(fig, f"Predicted against measured throughput of {len(runs)} published runs",
          "measured tokens/s per GPU (published, log)", "predicted tokens/s per GPU (log)", height=620)
    fig.update_xaxes(type="log", range=[_log(lo), _log(hi)])
    fig.update_yaxes(type="log", range=[_log(lo), _log(hi)])
    source_line(fig, "Measured: the published runs (megacluster catalog runs.yaml); each run's source is listed "
                     "below")
    cap = ("Each point is one published training run: its measured throughput against the step model's prediction "
           "(colour: software stack, marker: GPU generation). On the solid line the prediction is exact; the "
           "dashed and dotted lines are +/-10% and +/-25%.")
    cap += (" Error bars: the prediction interval of each run." if any_iv else
            " No prediction intervals in this result.")
    ids = [_get(r, "id") for r in runs]
    return Panel(fig, cap, grouped_sources([(i, sources[i]) for i in ids if sources.get(i)]))


def _log(x: float) -> float:
    import math

    return math.log10(x)


def error_figure(runs: list, summary: dict) -> Panel:
    """Signed error of each run, sorted, coloured by stack, patterned by GPU generation."""
    import plotly.graph_objects as go

    rs = sorted(runs, key=lambda r: _get(r, "error"))
    stacks = sorted({_get(r, "framework") for r in runs})
    gens = sorted({_get(r, "generation") for r in runs})
    fig = go.Figure()
    for i, st in enumerate(stacks):
        for j, g in enumerate(gens):
            sel = [r for r in rs if _get(r, "framework") == st and _get(r, "generation") == g]
            if not sel:
                continue
            fig.add_trace(go.Bar(x=[_get(r, "id") for r in sel], y=[_get(r, "error") * 100 for r in sel],
                                 name=f"{st}, {g}", marker={"color": PALETTE[i % len(PALETTE)],
                                                            "pattern": {"shape": PATTERNS[j % len(PATTERNS)]}},
                                 hovertemplate="%{x}: %{y:+.1f}%<extra>" + f"{st}, {g}" + "</extra>"))
    for y in (10, -10, 25, -25):
        fig.add_hline(y=y, line={"color": "#AAA", "dash": "dash" if abs(y) == 10 else "dot"})
    a = summary.get("all", {})
    style(fig, f"Error of each run: MAPE {a.get('mape', 0):.2%}, worst {a.get('max_abs_error', 0):.1%} "
               f"over {a.get('n', len(runs))} runs", "run (sorted by error)", "predicted / measured - 1 (%)",
          height=560)
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(categoryorder="array", categoryarray=[_get(r, "id") for r in rs], tickangle=-60,
                     tickfont={"size": 9})
    groups = "; ".join(f"{k}: MAPE {v['mape']:.1%} ({v['n']} runs)" for k, v in summary.items() if k != "all")
    return Panel(fig, "Signed error of each run's predicted throughput (positive: the model is too fast), colour by "
                      "software stack, pattern by GPU generation. By group: " + groups + ".")


def validate_report(result: dict, runs_data: Optional[Iterable[dict]] = None, title: Optional[str] = None):
    """(title, subtitle, panels, notes) of a validation report; ``runs_data`` (the runs file's entries) gives the
    sources."""
    runs = list(result["runs"])
    sources = {str(r.get("id")): source_text(r) for r in (runs_data or []) if isinstance(r, dict)}
    a = result["summary"]["all"]
    sub = (f"{len(runs)} runs predicted, {len(result.get('skipped') or [])} skipped; MAPE {a['mape']:.2%}, worst "
           f"{a['max_abs_error']:.1%}")
    notes = [f"not predicted: {_get(s, 'id')}: {_get(s, 'reason')}" for s in result.get("skipped") or []]
    return (title or "megacluster validate: the step model against published runs", sub,
            [scatter_figure(runs, sources), error_figure(runs, result["summary"])], notes)
