"""Tables of the validation against published runs (``megacluster validate``): rich for the terminal,
markdown for the README, and the JSON object of ``--json``."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def _group_label(key: str) -> str:
    if key == "all":
        return "all runs"
    kind, _, value = key.partition(":")
    return f"{'GPU generation' if kind == 'generation' else kind} {value}"


def runs_table(result: dict[str, Any]) -> Table:
    t = Table(title="published runs: tokens/s per GPU, measured vs predicted", title_justify="left")
    for col, just in (("run", "left"), ("GPUs", "right"), ("GPU", "left"), ("framework", "left"),
                      ("layout", "left"), ("reference", "right"), ("predicted", "right"), ("error", "right"),
                      ("GiB/GPU predicted (published, error)", "right")):
        t.add_column(col, justify=just, overflow="fold", no_wrap=col == "run")
    for r in result["runs"]:
        style = "red" if abs(r.error) > 0.25 else ("yellow" if abs(r.error) > 0.10 else None)
        t.add_row(r.id, f"{r.n_gpus:,}", r.gpu, r.framework + (f" ({r.note})" if r.note else ""),
                  r.layout + ("" if r.fits else " (does not fit)"),
                  f"{r.reference:,.1f}", f"{r.predicted:,.1f}", f"{r.error:+.1%}",
                  f"{r.memory_gib:.1f}" + _mem_ref(r), style=style)
    return t


def skipped_table(result: dict[str, Any]) -> Table:
    """The runs that could not be predicted, each with the reason; they are left out of every score."""
    t = Table(title="runs not predicted (left out of the scores)", title_justify="left", title_style="yellow")
    t.add_column("run", no_wrap=True)
    t.add_column("reason", overflow="fold")
    for s in result["skipped"]:
        t.add_row(s.id, s.reason)
    return t


def _mem_ref(r) -> str:
    if r.memory_reference_gib is None:
        return ""
    return f" ({r.memory_reference_gib:.1f}, {r.memory_error:+.0%})"


def summary_table(result: dict[str, Any]) -> Table:
    t = Table(title="prediction error by group: mean absolute percentage (MAPE) and worst", title_justify="left")
    for col, just in (("group", "left"), ("runs", "right"), ("MAPE", "right"), ("worst", "right")):
        t.add_column(col, justify=just)
    for key, s in result["summary"].items():
        t.add_row(_group_label(key), str(s["n"]), f"{s['mape']:.2%}", f"{s['max_abs_error']:.1%}",
                  style="bold" if key == "all" else None)
    mem = result.get("memory")
    if mem:
        t.add_row("memory per GPU vs published peak", str(mem["n"]), f"{mem['mape']:.1%}",
                  f"{mem['max_abs_error']:.1%}", style="italic")
    return t


def as_json(result: dict[str, Any]) -> dict[str, Any]:
    """``{"runs": [{"id", "reference", "predicted", "error", ...}], "mape", "max_abs_error", "summary"}``
    with errors as signed fractions (predicted / reference - 1)."""
    overall = result["summary"]["all"]
    mem = result.get("memory") or {}
    return {"runs": [r.model_dump() for r in result["runs"]], "mape": overall["mape"],
            "skipped": [s.model_dump() for s in result.get("skipped", [])],
            "max_abs_error": overall["max_abs_error"], "n": overall["n"], "summary": result["summary"],
            "memory_mape": mem.get("mape"), "memory_max_abs_error": mem.get("max_abs_error"),
            "memory_n": mem.get("n", 0)}


def markdown(result: dict[str, Any]) -> str:
    """The validation as two markdown tables (runs, then MAPE and worst per group)."""
    lines = ["| run | GPUs | GPU | framework | layout | measured tokens/s/GPU | predicted | error |",
             "|---|---:|---|---|---|---:|---:|---:|"]
    for r in result["runs"]:
        fit = "" if r.fits else " (does not fit)"
        fw = r.framework + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.id} | {r.n_gpus:,} | {r.gpu} | {fw} | {r.layout}{fit} | {r.reference:,.1f} | "
                     f"{r.predicted:,.1f} | {r.error:+.1%} |")
    lines += ["", "| group | runs | MAPE | worst |", "|---|---:|---:|---:|"]
    for key, s in result["summary"].items():
        lines.append(f"| {_group_label(key)} | {s['n']} | {s['mape']:.2%} | {s['max_abs_error']:.1%} |")
    with_mem = [r for r in result["runs"] if r.memory_reference_gib is not None]
    if with_mem:
        lines += ["", "| run | layout | published peak GiB/GPU | predicted | error |", "|---|---|---:|---:|---:|"]
        for r in with_mem:
            lines.append(f"| {r.id} | {r.layout} | {r.memory_reference_gib:.1f} | {r.memory_gib:.1f} | "
                         f"{r.memory_error:+.1%} |")
        mem = result["memory"]
        lines.append(f"| **memory, {mem['n']} runs** | | | MAPE {mem['mape']:.1%} | worst {mem['max_abs_error']:.1%} |")
    return "\n".join(lines)
