"""Figures of ``megacluster plan``: the top layouts side by side, every searched layout (step time against
memory, fits or not), and with ``--sweep-gpus`` the scaling curve with the reason efficiency falls."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .common import COLOURS, pretty, style, time_unit
from .page import Panel

GIB = 1024 ** 3


class SearchPoints:
    """``observe(step_time_s, memory_bytes, fits)`` for :func:`megacluster.search.search`: keeps an evenly
    thinned sample of at most about ``limit`` searched layouts (every ``stride``-th), and counts them all."""

    def __init__(self, limit: int = 4000):
        self.limit = limit
        self.stride = 1
        self.seen = 0
        self.fit = 0
        self.t: list[np.ndarray] = []
        self.m: list[np.ndarray] = []
        self.f: list[np.ndarray] = []

    def __call__(self, step_time_s: np.ndarray, memory_bytes: np.ndarray, fits: np.ndarray) -> None:
        n = len(fits)
        idx = np.arange((-self.seen) % self.stride, n, self.stride)
        self.seen += n
        self.fit += int(np.count_nonzero(fits))
        self.t.append(np.asarray(step_time_s)[idx])
        self.m.append(np.asarray(memory_bytes)[idx] / GIB)
        self.f.append(np.asarray(fits)[idx])
        while sum(len(x) for x in self.t) > self.limit:          # thin what is kept, and what comes next
            self.t, self.m, self.f = ([np.concatenate(a)[::2]] for a in (self.t, self.m, self.f))
            self.stride *= 2

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.t:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=bool)
        return np.concatenate(self.t), np.concatenate(self.m), np.concatenate(self.f)


def _short(e: Any, i: int) -> str:
    from ..tables import layout_label

    parts = layout_label(e.layout).split()
    return f"#{i + 1}<br>" + " ".join(parts[:4]) + "<br>" + " ".join(parts[4:8])


def top_figure(res: Any) -> Panel:
    """The top layouts' step times stacked by component, side by side, with MFU and memory above."""
    import plotly.graph_objects as go

    unit, k = time_unit(max(e.step_time_s for e in res.top))
    labels = [_short(e, i) for i, e in enumerate(res.top)]
    keys = [key for key in res.best.time_s if any(e.time_s.get(key, 0.0) > 0 for e in res.top)]
    fig = go.Figure()
    for key in keys:
        fig.add_trace(go.Bar(x=labels, y=[e.time_s.get(key, 0.0) * k for e in res.top], name=pretty(key),
                             marker_color=COLOURS.get(key), hovertemplate=pretty(key) + ": %{y:.4g} " + unit +
                             "<extra></extra>"))
    fig.add_trace(go.Scatter(x=labels, y=[e.step_time_s * k for e in res.top], mode="text", showlegend=False,
                             text=[f"MFU {e.mfu:.1%}<br>{e.memory_gib_per_gpu:.0f} GiB" for e in res.top],
                             textposition="top center", hoverinfo="skip"))
    style(fig, f"Top {len(res.top)} layouts of {res.searched:,} searched: step time by component",
          "layout (rank, degrees, micro-batch, global batch)", f"time per step ({unit})", height=520)
    fig.update_layout(barmode="stack")
    fig.update_yaxes(range=[0, max(e.step_time_s for e in res.top) * k * 1.18])
    return Panel(fig, "The fastest layouts that fit in memory, fastest first, each step split by component "
                      "(the step model's). Text above each bar: MFU and memory per GPU.")


def scatter_figure(res: Any, points: Optional[SearchPoints]) -> Panel:
    """Every searched layout (a thinned sample when there are many): step time against memory per GPU."""
    import plotly.graph_objects as go

    fig = go.Figure()
    drawn = "none recorded"
    if points is not None and points.seen:
        t, m, f = points.arrays()
        for ok, name, colour in ((False, "does not fit", "#BBBBBB"), (True, "fits", "#4C78A8")):
            sel = f == ok
            fig.add_trace(go.Scatter(x=m[sel], y=t[sel], mode="markers", name=f"{name} ({int(sel.sum()):,} drawn)",
                                     marker={"size": 5, "color": colour, "opacity": 0.6},
                                     hovertemplate="%{x:.1f} GiB, %{y:.4g} s<extra>" + name + "</extra>"))
        drawn = (f"{len(t):,} of {points.seen:,} searched layouts drawn" +
                 (f" (every {points.stride}th)" if points.stride > 1 else "") +
                 f"; {points.fit:,} fit in memory")
    fig.add_trace(go.Scatter(x=[e.memory_gib_per_gpu for e in res.top], y=[e.step_time_s for e in res.top],
                             mode="markers+text", name="top layouts", text=[f"#{i + 1}" for i in range(len(res.top))],
                             textposition="middle right",
                             marker={"symbol": "star", "size": 14, "color": "#E45756",
                                     "line": {"color": "black", "width": 1}},
                             hovertemplate="%{text}: %{x:.1f} GiB, %{y:.4g} s<extra></extra>"))
    cap = float(np.log10(res.best.hbm_gib))          # an annotation on a log axis takes log10 (a shape does not)
    fig.add_shape(type="line", x0=res.best.hbm_gib, x1=res.best.hbm_gib, y0=0, y1=1, xref="x", yref="paper",
                  line={"color": "#C00", "dash": "dash"})
    fig.add_annotation(x=cap, y=1.0, yref="paper", text=f"capacity {res.best.hbm_gib:g} GiB",
                       showarrow=False, xanchor="left", yanchor="top", font={"color": "#C00"})
    style(fig, f"Every searched layout: step time against memory per GPU ({res.searched:,} searched, "
               f"{res.feasible:,} fit)", "memory per GPU (GiB, log)", "time per step (s, log)", height=520)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    return Panel(fig, f"Each point is one layout the search evaluated ({drawn}); the stars are the top layouts. "
                      "Layouts right of the dashed line do not fit in the GPU's memory (with --headroom the "
                      "search's limit is lower). With a global-batch range, layouts differ in batch and are "
                      "ranked by time per sequence.")


def plan_report(res: Any, points: Optional[SearchPoints] = None):
    """(title, subtitle, panels, notes) of a plan report."""
    from ..tables import layout_label

    sub = (f"{res.model} on {res.n_gpus:,} x {res.gpu}, global batch {res.global_batch:,} x {res.seq_len:,} "
           f"tokens; {res.searched:,} layouts searched in {res.seconds:.2f} s\nbest: "
           f"{layout_label(res.best.layout)}, {res.best.step_time_s:.4g} s per step, MFU {res.best.mfu:.1%}")
    notes = list(res.notes) + [w for w in res.why_slower]
    return (f"megacluster plan: {res.model} on {res.n_gpus:,} x {res.gpu}", sub,
            [top_figure(res), scatter_figure(res, points)], notes)


def _first_clause(reason: str) -> str:
    return reason.split(";")[0].split(": ")[0]


def scaling_figure(res: Any) -> Panel:
    """Tokens/s and MFU of the best layout at each cluster size, with why MFU falls where it does."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in res.rows if r.best is not None]
    n = [r.n_gpus for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=n, y=[r.best.tokens_per_s / 1e6 for r in rows], mode="lines+markers",
                             name="throughput (M tokens/s)", marker={"size": 9, "color": "#4C78A8"},
                             customdata=[[r.layout] for r in rows],
                             hovertemplate="%{x:,} GPUs: %{y:.3g} M tokens/s<br>%{customdata[0]}<extra></extra>"),
                  secondary_y=False)
    fig.add_trace(go.Scatter(x=n, y=[r.mfu * 100 for r in rows], mode="lines+markers", name="MFU (%)",
                             marker={"size": 9, "color": "#F58518", "symbol": "diamond"},
                             hovertemplate="%{x:,} GPUs: MFU %{y:.1f}%<extra></extra>"), secondary_y=True)
    for r in rows:
        if r.reason:
            fig.add_annotation(x=np.log10(r.n_gpus), y=r.mfu * 100, yref="y2", text=_first_clause(r.reason),
                               showarrow=True, arrowhead=2, ax=0, ay=-40, font={"size": 11},
                               bgcolor="rgba(255,255,255,0.8)")
    failed = [r for r in res.rows if r.best is None]
    style(fig, f"Scaling {res.model} on {res.gpu}: throughput and MFU of the best layout by cluster size",
          "GPUs (log)", "", height=520)
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text="throughput (million tokens/s)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="MFU (% of dense BF16 peak)", rangemode="tozero", secondary_y=True)
    why = "; ".join(f"{r.n_gpus:,} GPUs: {r.reason}" for r in rows if r.reason)
    cap = ("Throughput (left axis) and MFU (right axis) of the fastest layout that fits at each size. Where MFU "
           "falls by more than 1% from the previous size, the label names the component that grew most: " +
           (why or "none here") + ".")
    if failed:
        cap += " Not shown (nothing fits): " + "; ".join(f"{r.n_gpus:,} GPUs ({r.reason})" for r in failed) + "."
    return Panel(fig, cap)


def breakdown_figure(res: Any) -> Panel:
    """Share of the step by component at each size: where the time goes as the cluster grows."""
    import plotly.graph_objects as go

    rows = [r for r in res.rows if r.best is not None]
    x = [f"{r.n_gpus:,}" for r in rows]
    keys = [k for k in rows[0].best.time_s if any(r.best.time_s.get(k, 0.0) > 0 for r in rows)] if rows else []
    fig = go.Figure()
    for key in keys:
        fig.add_trace(go.Bar(x=x, y=[100 * r.best.time_s.get(key, 0.0) / r.best.step_time_s for r in rows],
                             name=pretty(key), marker_color=COLOURS.get(key),
                             hovertemplate=pretty(key) + ": %{y:.1f}% of the step<extra></extra>"))
    style(fig, "Where the step time goes at each cluster size", "GPUs", "share of the step time (%)", height=480)
    fig.update_layout(barmode="stack")
    return Panel(fig, "Each bar is the best layout's step at that size, split by component (the step model's); "
                      "a growing bubble or communication share is what lowers MFU.")


def sweep_report(res: Any):
    """(title, subtitle, panels, notes) of a plan --sweep-gpus report."""
    sizes = ", ".join(f"{r.n_gpus:,}" for r in res.rows)
    sub = f"{res.model} on {res.gpu}, sequence {res.seq_len:,}; sizes {sizes}; searched in {res.seconds:.2f} s"
    return (f"megacluster plan --sweep-gpus: {res.model} on {res.gpu}", sub,
            [scaling_figure(res), breakdown_figure(res)], list(res.notes))
