"""Rich tables of one predicted step (:class:`megacluster.estimate.StepEstimate`): rates, memory per GPU,
time per step, phases. Formatting only: every figure comes from the estimate."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table

from ..specs import Layout
from ..uncertainty import basis_text  # noqa: F401  (re-exported: the report modules print it)

# labels of StepEstimate.time_s keys, grouped as printed
TIME_GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("compute", (("gemm_attn_proj", "GEMM: attention projections"), ("gemm_mlp", "GEMM: MLP / experts"),
                 ("attention", "attention core (QK^T, softmax, AV)"), ("memory_bound", "memory-bound ops"),
                 ("recompute", "activation recompute"), ("output_layer", "output layer + loss"))),
    ("communication (exposed)", (("tp_comm", "tensor parallel"), ("cp_comm", "context parallel"),
                                 ("ep_comm", "expert all-to-all"), ("pp_comm", "pipeline send/recv"),
                                 ("dp_comm", "data parallel"),
                                 ("overlap_slowdown", "compute slowed by hidden communication"))),
    ("pipeline", (("bubble", "bubble"),)),
    ("optimizer", (("optimizer", "optimizer step"),)),
    ("synchronisation", (("straggler", "waiting for the slowest of N GPUs"),)),
    ("host", (("op_overhead", "eager-op launch time (measured devices)"),)),
)
MEMORY_LABELS = (("weights", "weights"), ("gradients", "gradients"), ("optimizer", "optimizer state"),
                 ("activations", "activations"), ("buffers", "buffers + reserved"))


def wide_console():
    """A rich console as wide as the terminal; 140 columns when the output is not a terminal (a pipe, a
    file) and COLUMNS is not set, so that tables are not squeezed to rich's default of 80."""
    import os

    from rich.console import Console

    con = Console()
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(width=140)
    return con


def layout_label(L: Layout) -> str:
    """A layout in one short line, e.g. ``TP8 PP16 DP128 VP2 mb1 gb2048 s8192 Z1 selective bf16``."""
    parts = [f"TP{L.tp}", f"PP{L.pp}", f"DP{L.dp}"]
    parts += [f"{k.upper()}{getattr(L, k)}" for k in ("cp", "ep", "vp") if getattr(L, k) > 1]
    parts += [f"mb{L.micro_batch}", f"gb{L.global_batch}", f"s{L.seq_len}", f"Z{L.zero}", L.recompute,
              L.precision]
    if L.tp > 1 and not L.sequence_parallel:
        parts.append("no-SP")
    return " ".join(parts)


def fmt_seconds(s: float) -> str:
    if s == 0:
        return "0"
    if abs(s) < 1e-3:
        return f"{s * 1e6:.0f} us"
    if abs(s) < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.3f} s"


def fmt_count(x: float) -> str:
    """1234567 -> '1.23M'."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def fmt_params(n: float) -> str:
    """Parameter count: 405.8B, 1.01T, 124M."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.0f}"


def interval_text(iv, fmt) -> str:
    """`` (80%: lo - hi)`` for an interval ``[lo, hi]`` (empty for None), each end through ``fmt``."""
    return "" if iv is None else f" [dim](80%: {fmt(iv[0])} - {fmt(iv[1])})[/dim]"


def summary_table(est, intervals: dict | None = None) -> Table:
    """Headline figures of one step: layout, step time, throughput, utilisation, memory verdict; with
    ``intervals`` (``uncertainty.estimate_intervals``), the 80% interval beside each predicted rate and time."""
    iv = intervals or {}
    t = Table(title=f"{est.model} on {est.n_gpus:,} x {est.gpu} ({est.stack.framework})", show_header=False,
              title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value", justify="right")
    L = est.layout
    t.add_row("layout", layout_label(L))
    t.add_row("micro-batches per step", f"{est.n_microbatches:g}")
    if L.pp > 1 and est.virtual_stages != L.vp:
        t.add_row("model chunks per pipeline rank", f"{est.virtual_stages:g} (the {est.stack.framework} stack's)")
    t.add_row("tokens per step", f"{est.tokens_per_step:,.0f}")
    t.add_row("step time", fmt_seconds(est.step_time_s) + interval_text(iv.get("step_time_s"), fmt_seconds))
    t.add_row("tokens/s", f"{est.tokens_per_s:,.0f}" + interval_text(iv.get("tokens_per_s"), "{:,.0f}".format))
    t.add_row("tokens/s per GPU", f"{est.tokens_per_s_per_gpu:,.1f}"
              + interval_text(iv.get("tokens_per_s_per_gpu"), "{:,.1f}".format))
    t.add_row("model FLOPs per token", fmt_count(est.model_flops_per_token))
    t.add_row("TFLOP/s per GPU (model)", f"{est.tflops_per_gpu:,.1f}"
              + interval_text(iv.get("tflops_per_gpu"), "{:,.1f}".format))
    t.add_row("MFU", f"{est.mfu:.1%}" + interval_text(iv.get("mfu"), "{:.1%}".format)
              + (" (against the BF16 peak)" if L.precision == "fp8" else ""))
    t.add_row("HFU", f"{est.hfu:.1%}")
    verdict = "[green]fits[/green]" if est.fits else "[red]does not fit[/red]"
    t.add_row("memory per GPU", f"{est.memory_gib_per_gpu:.1f} / {est.hbm_gib:g} GiB {verdict}")
    if "basis" in iv:
        t.caption = basis_text(iv["basis"])
        t.caption_justify = "left"
    return t


def memory_table(est) -> Table:
    """Memory per GPU by component, GiB and share of the accelerator's capacity."""
    t = Table(title="memory per GPU", title_justify="left")
    t.add_column("component")
    t.add_column("GiB", justify="right")
    t.add_column("of HBM", justify="right")
    for key, label in MEMORY_LABELS:
        v = est.memory_gib.get(key, 0.0)
        t.add_row(label, f"{v:.2f}", f"{v / est.hbm_gib:.1%}")
    for key in sorted(set(est.memory_gib) - {k for k, _ in MEMORY_LABELS}):
        v = est.memory_gib[key]
        t.add_row(key, f"{v:.2f}", f"{v / est.hbm_gib:.1%}")
    style = "bold green" if est.fits else "bold red"
    t.add_row("total", f"{est.memory_gib_per_gpu:.2f}", f"{est.memory_gib_per_gpu / est.hbm_gib:.1%}",
              style=style)
    t.add_row("available", f"{est.hbm_gib:g}", "")
    return t


def time_table(est) -> Table:
    """Time per step by component (compute by op class, exposed communication, bubble, optimizer)."""
    t = Table(title="time per step", title_justify="left")
    t.add_column("component")
    t.add_column("time", justify="right")
    t.add_column("of step", justify="right")
    shown: set[str] = set()
    for group, items in TIME_GROUPS:
        rows = [(k, label) for k, label in items if est.time_s.get(k, 0.0) > 0]
        if not rows:
            continue
        t.add_row(f"[bold]{group}[/bold]", "", "")
        for key, label in rows:
            v = est.time_s[key]
            shown.add(key)
            t.add_row(f"  {label}", fmt_seconds(v), f"{v / est.step_time_s:.1%}")
    for key in sorted(set(est.time_s) - shown - {k for _, items in TIME_GROUPS for k, _ in items}):
        v = est.time_s[key]
        if v > 0:
            t.add_row(f"  {key}", fmt_seconds(v), f"{v / est.step_time_s:.1%}")
    t.add_row("step time", fmt_seconds(est.step_time_s), "100%", style="bold")
    return t


def phases_table(est) -> Table:
    """Exposed seconds per step by phase (they add up to the step time)."""
    t = Table(title="step phases (exposed)", title_justify="left")
    t.add_column("phase")
    t.add_column("time", justify="right")
    t.add_column("of step", justify="right")
    for k, v in est.phases_s.items():
        if v > 0:
            t.add_row(k, fmt_seconds(v), f"{v / est.step_time_s:.1%}")
    return t


def estimate_tables(est, intervals: dict | None = None) -> list[Table]:
    """Everything ``megacluster estimate`` prints for one step (with its 80% intervals where given)."""
    return [summary_table(est, intervals), memory_table(est), time_table(est), phases_table(est)]


def kv_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("what", style="bold")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v)
    return t
