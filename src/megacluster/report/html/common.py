"""Helpers shared by the figure modules: the look of a figure, units, short labels."""

from __future__ import annotations

from typing import Any

# one colour per kind of time (the same in every report)
COLOURS = {
    "compute": "#4C78A8", "gemm_attn_proj": "#4C78A8", "gemm_mlp": "#72B7B2", "attention": "#54A24B",
    "memory_bound": "#B279A2", "recompute": "#9D755D", "output_layer": "#BAB0AC",
    "tp_comm": "#F58518", "cp_comm": "#E45756", "ep_comm": "#FF9DA6", "pp_comm": "#EECA3B", "dp_comm": "#E4A14B",
    "communication": "#F58518", "bubble": "#D3D3D3", "idle": "#A9A9A9", "overlap_slowdown": "#8C6D31",
    "optimizer": "#79706E", "other": "#C7C7C7",
    "weights": "#4C78A8", "gradients": "#72B7B2", "optimizer_state": "#79706E", "activations": "#54A24B",
    "buffers": "#BAB0AC",
}
PALETTE = ["#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#EECA3B", "#B279A2", "#FF9DA6", "#9D755D",
           "#BAB0AC", "#8C6D31", "#79706E"]
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"


def style(fig: Any, title: str, x: str = "", y: str = "", height: int = 460, legend: bool = True,
          legend_below: bool = False) -> Any:
    """Title, axis labels (with units), white template, a legend on the right (or below the plot)."""
    leg = ({"orientation": "h", "yanchor": "top", "y": -0.35, "xanchor": "left", "x": 0.0} if legend_below else
           {"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.02})
    fig.update_layout(title={"text": title, "x": 0.01, "xanchor": "left"}, template="plotly_white",
                      height=height, font={"family": FONT, "size": 13}, showlegend=legend,
                      margin={"l": 70, "r": 30, "t": 70, "b": 130 if legend_below else 70}, legend=leg)
    if x:
        fig.update_xaxes(title_text=x)
    if y:
        fig.update_yaxes(title_text=y)
    return fig


def source_line(fig: Any, text: str) -> Any:
    """A short 'Source: ...' line under the plot (the full sources are listed under the figure)."""
    text = " ".join(text.split())
    if len(text) > 150:
        text = text[:147].rsplit(" ", 1)[0] + " ..."
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.0, y=-0.16, xanchor="left", yanchor="top",
                       showarrow=False, font={"size": 10, "color": "#666"})
    fig.update_layout(margin={"b": 95})
    return fig


def time_unit(seconds: float) -> tuple[str, float]:
    """('ms', 1e3) for steps under a second, else ('s', 1.0): the unit a step's components read best in."""
    return ("ms", 1e3) if seconds < 1.0 else ("s", 1.0)


def pretty(key: str) -> str:
    """'gemm_attn_proj' -> a readable label (the search module's names where it has one)."""
    from ...search import TIME_LABELS

    return TIME_LABELS.get(key, key.replace("_", " "))


def grouped_sources(pairs: list[tuple[str, str]]) -> list[str]:
    """[(what, source)] -> 'what, what2: source' lines, one per distinct source (in first-seen order)."""
    by: dict[str, list[str]] = {}
    for what, src in pairs:
        src = " ".join(str(src).split())
        if src:
            by.setdefault(src, []).append(what)
    return [f"{', '.join(dict.fromkeys(whats))}: {src}" for src, whats in by.items()]
