"""Tables of the validation against published runs (``megacluster validate``): rich for the terminal,
markdown for the README, and the JSON object of ``--json``."""

from __future__ import annotations

from typing import Any, Optional

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
                      ("80% interval", "right"), ("GiB/GPU predicted (published, error)", "right")):
        t.add_column(col, justify=just, overflow="fold", no_wrap=col == "run")
    for r in result["runs"]:
        style = "red" if abs(r.error) > 0.25 else ("yellow" if abs(r.error) > 0.10 else None)
        t.add_row(r.id, f"{r.n_gpus:,}", r.gpu, r.framework + (f" ({r.note})" if r.note else ""),
                  r.layout + ("" if r.fits else " (does not fit)"),
                  f"{r.reference:,.1f}", f"{r.predicted:,.1f}", f"{r.error:+.1%}", _interval_cell(result, r.id),
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


def _run_interval(result: dict[str, Any], rid: str) -> Optional[dict[str, Any]]:
    return ((result.get("intervals") or {}).get("by_run") or {}).get(rid)


def _interval_cell(result: dict[str, Any], rid: str) -> str:
    """The run's leave-family-out 80% interval of tokens/s/GPU; 'out' where the measurement falls outside."""
    iv = _run_interval(result, rid)
    if iv is None:
        return ""
    lo, hi = iv["interval"]
    return f"{lo:,.0f}-{hi:,.0f}" + ("" if iv["inside"] else " out")


def _coverage(result: dict[str, Any], key: str) -> tuple[str, str]:
    c = ((result.get("intervals") or {}).get("coverage") or {}).get(key)
    if not c or not c["n"]:
        return "", ""
    return f"{c['coverage']:.0%}", f"+/-{c['median_half_width']:.0%}"


def _mem_ref(r) -> str:
    if r.memory_reference_gib is None:
        return ""
    return f" ({r.memory_reference_gib:.1f}, {r.memory_error:+.0%})"


def summary_table(result: dict[str, Any]) -> Table:
    t = Table(title="prediction error by group: mean absolute percentage (MAPE) and worst", title_justify="left")
    for col, just in (("group", "left"), ("runs", "right"), ("MAPE", "right"), ("worst", "right"),
                      ("in 80% interval", "right"), ("median interval", "right")):
        t.add_column(col, justify=just)
    for key, s in result["summary"].items():
        t.add_row(_group_label(key), str(s["n"]), f"{s['mape']:.2%}", f"{s['max_abs_error']:.1%}",
                  *_coverage(result, key), style="bold" if key == "all" else None)
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
    ivs = (result.get("intervals") or {}).get("by_run") or {}
    cov = (result.get("intervals") or {}).get("coverage") or {}
    return {"runs": [{**r.model_dump(), **_run_json(ivs.get(r.id))} for r in result["runs"]],
            "mape": overall["mape"], "coverage": (cov.get("all") or {}).get("coverage"),
            "median_half_width": (cov.get("all") or {}).get("median_half_width"), "coverage_by_group": cov,
            "skipped": [s.model_dump() for s in result.get("skipped", [])],
            "max_abs_error": overall["max_abs_error"], "n": overall["n"], "summary": result["summary"],
            "memory_mape": mem.get("mape"), "memory_max_abs_error": mem.get("max_abs_error"),
            "memory_n": mem.get("n", 0)}


def _run_json(iv: Optional[dict[str, Any]]) -> dict[str, Any]:
    """A run's ``interval`` (tokens/s per GPU), ``inside`` and ``interval_basis`` for ``--json``."""
    if iv is None:
        return {}
    return {"interval": iv["interval"], "inside": iv["inside"], "interval_basis": iv["basis"]}


def markdown(result: dict[str, Any]) -> str:
    """The validation as two markdown tables (runs, then MAPE and worst per group)."""
    lines = ["| run | GPUs | GPU | framework | layout | measured tokens/s/GPU | predicted | error | 80% interval |",
             "|---|---:|---|---|---|---:|---:|---:|---:|"]
    for r in result["runs"]:
        fit = "" if r.fits else " (does not fit)"
        fw = r.framework + (f" ({r.note})" if r.note else "")
        lines.append(f"| {r.id} | {r.n_gpus:,} | {r.gpu} | {fw} | {r.layout}{fit} | {r.reference:,.1f} | "
                     f"{r.predicted:,.1f} | {r.error:+.1%} | {_interval_cell(result, r.id)} |")
    lines += ["", "| group | runs | MAPE | worst | in 80% interval | median interval |", "|---|---:|---:|---:|---:|---:|"]
    for key, s in result["summary"].items():
        lines.append(f"| {_group_label(key)} | {s['n']} | {s['mape']:.2%} | {s['max_abs_error']:.1%} | "
                     + " | ".join(_coverage(result, key)) + " |")
    with_mem = [r for r in result["runs"] if r.memory_reference_gib is not None]
    if with_mem:
        lines += ["", "| run | layout | published peak GiB/GPU | predicted | error |", "|---|---|---:|---:|---:|"]
        for r in with_mem:
            lines.append(f"| {r.id} | {r.layout} | {r.memory_reference_gib:.1f} | {r.memory_gib:.1f} | "
                         f"{r.memory_error:+.1%} |")
        mem = result["memory"]
        lines.append(f"| **memory, {mem['n']} runs** | | | MAPE {mem['mape']:.1%} | worst {mem['max_abs_error']:.1%} |")
    return "\n".join(lines)
