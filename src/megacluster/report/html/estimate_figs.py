"""Figures of ``megacluster estimate`` (one predicted step, a :class:`~megacluster.estimate.StepEstimate`):
where the step time goes, how memory fills the GPU, and the slowest pipeline stage's schedule."""

from __future__ import annotations

from typing import Any, Optional

from .common import COLOURS, pretty, source_line, style, time_unit
from .page import Panel

# components repeated once per micro-batch on the slowest stage (the step model multiplies them by the count)
PER_MICROBATCH_COMPUTE = ("gemm_attn_proj", "gemm_mlp", "attention", "memory_bound", "recompute", "output_layer")
PER_MICROBATCH_COMM = ("tp_comm", "cp_comm", "ep_comm")
AFTER_MICROBATCHES = ("pp_comm", "overlap_slowdown", "dp_comm", "optimizer")
MAX_SEGMENTS = 64          # micro-batches drawn one by one up to this count, grouped beyond


def step_time_figure(est: Any) -> Panel:
    """Waterfall of the step time by component, adding up to the predicted step time."""
    import plotly.graph_objects as go

    unit, k = time_unit(est.step_time_s)
    items = [(key, v) for key, v in est.time_s.items() if v > 0]
    other = est.step_time_s - sum(v for _, v in items)
    if other > 1e-9 * est.step_time_s:
        items.append(("other", other))
    fig = go.Figure(go.Waterfall(
        orientation="h", y=[pretty(key) for key, _ in items] + ["step time"],
        x=[v * k for _, v in items] + [est.step_time_s * k],
        measure=["relative"] * len(items) + ["total"],
        text=[f"{v * k:,.3g} {unit} ({v / est.step_time_s:.1%})" for _, v in items] +
             [f"{est.step_time_s * k:,.4g} {unit}"],
        textposition="outside", connector={"line": {"color": "#999"}},
        increasing={"marker": {"color": "#4C78A8"}}, totals={"marker": {"color": "#222"}},
        hovertemplate="%{y}: %{x:.4g} " + unit + "<extra></extra>"))
    style(fig, f"Step time by component: {est.step_time_s * k:,.4g} {unit} per step, MFU {est.mfu:.1%}",
          f"time per step ({unit})", "", height=max(380, 140 + 30 * len(items)), legend=False)
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(rangemode="tozero", range=[0, est.step_time_s * k * 1.25])
    return Panel(fig, "Each bar is the time one component adds to a training step on the slowest pipeline stage "
                      "(communication counts only where it is not hidden behind compute); the last bar is the "
                      "predicted step time. Computed by the step model (megacluster.estimate).")


def memory_figure(est: Any, gpu_source: str = "") -> Panel:
    """Memory per GPU by part, stacked, against the GPU's capacity."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key, v in est.memory_gib.items():
        fig.add_trace(go.Bar(y=["per GPU"], x=[v], orientation="h", name=f"{key} ({v:,.1f} GiB)",
                             marker_color=COLOURS.get("optimizer_state" if key == "optimizer" else key),
                             hovertemplate=f"{key}: %{{x:.2f}} GiB<extra></extra>"))
    fig.add_vline(x=est.hbm_gib, line={"color": "#C00", "dash": "dash", "width": 2})
    fig.add_annotation(x=est.hbm_gib, y=1.0, yref="paper", text=f"capacity {est.hbm_gib:g} GiB", showarrow=False,
                       xanchor="right", yanchor="bottom", font={"color": "#C00"})
    verdict = "fits" if est.fits else "does not fit"
    style(fig, f"Memory per GPU: {est.memory_gib_per_gpu:,.1f} of {est.hbm_gib:g} GiB ({verdict})",
          "memory per GPU (GiB)", "", height=340, legend_below=True)
    fig.update_layout(barmode="stack")
    fig.update_xaxes(range=[0, max(est.hbm_gib, est.memory_gib_per_gpu) * 1.08])
    src = [f"{est.gpu} capacity: {gpu_source}"] if gpu_source else []
    if gpu_source:
        source_line(fig, f"Capacity: {est.gpu} data sheet (megacluster catalog gpus {est.gpu})")
    return Panel(fig, "Predicted memory of the fullest GPU (weights, gradients and optimizer state by ZeRO "
                      "stage, activations of the micro-batches in flight, buffers and reserve) against the GPU's "
                      "usable memory.", src)


def _groups(n: int) -> list[tuple[int, int]]:
    """Micro-batches 1..n as at most MAX_SEGMENTS (first, last) groups."""
    if n <= MAX_SEGMENTS:
        return [(i, i) for i in range(1, n + 1)]
    size = -(-n // MAX_SEGMENTS)
    return [(a, min(a + size - 1, n)) for a in range(1, n + 1, size)]


def schedule_figure(est: Any) -> Panel:
    """The slowest stage's step as a timeline: warm-up idle, each micro-batch's forward+backward compute and its
    exposed TP/CP/EP communication, drain idle (the bubble), then pipeline sends, DP communication and the
    optimizer. Lengths are the step model's; the order is the schedule's (1F1B: idle at both ends)."""
    import plotly.graph_objects as go

    unit, k = time_unit(est.step_time_s)
    n_mb = max(int(round(est.n_microbatches)), 1)
    comp = sum(est.time_s.get(x, 0.0) for x in PER_MICROBATCH_COMPUTE) / n_mb
    comm = sum(est.time_s.get(x, 0.0) for x in PER_MICROBATCH_COMM) / n_mb
    bubble = est.time_s.get("bubble", 0.0)
    segs: dict[str, list[tuple[float, float, str]]] = {"idle (bubble)": [], "micro-batch compute": [],
                                                       "exposed TP/CP/EP communication": []}
    t = 0.0
    if bubble > 0:
        segs["idle (bubble)"].append((t, bubble / 2, "warm-up: waiting for the first activations"))
        t += bubble / 2
    for a, b in _groups(n_mb):
        m = b - a + 1
        name = f"micro-batch {a}" if a == b else f"micro-batches {a}-{b}"
        segs["micro-batch compute"].append((t, comp * m, f"{name}: forward + backward"))
        t += comp * m
        if comm > 0:
            segs["exposed TP/CP/EP communication"].append((t, comm * m, f"{name}: exposed communication"))
            t += comm * m
    if bubble > 0:
        segs["idle (bubble)"].append((t, bubble / 2, "drain: waiting for the last gradients"))
        t += bubble / 2
    for key in AFTER_MICROBATCHES:
        v = est.time_s.get(key, 0.0)
        if v > 0:
            segs.setdefault(pretty(key), []).append((t, v, pretty(key)))
            t += v
    colours = {"idle (bubble)": COLOURS["bubble"], "micro-batch compute": COLOURS["compute"],
               "exposed TP/CP/EP communication": COLOURS["tp_comm"], pretty("pp_comm"): COLOURS["pp_comm"],
               pretty("dp_comm"): COLOURS["dp_comm"], pretty("optimizer"): COLOURS["optimizer"],
               pretty("overlap_slowdown"): COLOURS["overlap_slowdown"]}
    fig = go.Figure()
    for name, rows in segs.items():
        if not rows:
            continue
        fig.add_trace(go.Bar(
            y=["slowest stage"] * len(rows), x=[d * k for _, d, _ in rows], base=[s * k for s, _, _ in rows],
            orientation="h", name=name, marker={"color": colours.get(name), "line": {"color": "white", "width": 1}},
            customdata=[[lab, s * k, (s + d) * k] for s, d, lab in rows],
            hovertemplate="%{customdata[0]}<br>%{customdata[1]:.4g} to %{customdata[2]:.4g} " + unit +
                          "<extra></extra>"))
    L = est.layout
    vp = f", {est.virtual_stages:g} chunks per rank" if est.virtual_stages > 1 else ""
    style(fig, f"Pipeline schedule of the slowest stage: {n_mb} micro-batches, pp={L.pp}{vp}, bubble "
               f"{bubble / est.step_time_s:.1%} of the step", f"time within one step ({unit})", "", height=360,
          legend_below=True)
    fig.update_layout(barmode="overlay", bargap=0.4)
    fig.update_xaxes(range=[0, t * k * 1.01])
    return Panel(fig, "One training step of the slowest pipeline stage laid out in time: the pipeline bubble "
                      "(split between warm-up and drain as in a 1F1B schedule), each micro-batch's forward and "
                      "backward compute with its exposed tensor/context/expert-parallel communication, then the "
                      "exposed pipeline sends, data-parallel gradient communication and the optimizer step. "
                      "Segment lengths are the step model's totals; grouped micro-batches share one segment.")


def gpu_source(gpu_id: str) -> str:
    """The catalog's source of a GPU's figures ('' for a GPU the catalog does not know)."""
    from ... import catalog

    try:
        return catalog.gpu(gpu_id).source
    except Exception:       # a GPU given in a file: no catalog source
        return ""


def estimate_report(est: Any, title: Optional[str] = None):
    """(title, subtitle, panels, notes) of an estimate report."""
    from ..tables import layout_label

    panels = [step_time_figure(est), memory_figure(est, gpu_source(est.gpu)), schedule_figure(est)]
    sub = (f"{est.model} on {est.n_gpus:,} x {est.gpu}; layout {layout_label(est.layout)}; stack "
           f"{est.stack.framework}\n{est.step_time_s:.4g} s per step, {est.tokens_per_s_per_gpu:,.0f} tokens/s per "
           f"GPU, MFU {est.mfu:.1%}, {est.memory_gib_per_gpu:.1f} GiB per GPU")
    return title or f"megacluster estimate: {est.model} on {est.n_gpus:,} x {est.gpu}", sub, panels, []
