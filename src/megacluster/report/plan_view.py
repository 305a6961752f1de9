"""``megacluster plan``: run :func:`megacluster.search.search` (or ``sweep``) from command-line values, show a
progress bar when the search runs longer than a second, print the ranked layouts or the scaling study, and save
the best plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from ..errors import UserError, short
from ..jsonout import print_json
from ..uncertainty import estimate_band, estimate_intervals, json_fields
from .inputs import PRECISION_CHOICES, RECOMPUTE_CHOICES, choice, positive, resolve_cluster, resolve_model, \
    resolve_stack
from .progress import ProgressBar, progress_bar
from .tables import basis_text, estimate_tables, fmt_seconds, interval_text, layout_label



def parse_sizes(text: str) -> list[int]:
    """``"1024,4096,16k,100000"`` -> GPU counts (``k`` = 1,000; ``Ki`` = 1,024)."""
    sizes = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        mult = 1
        low = part.lower()
        if low.endswith("ki"):
            mult, part = 1024, part[:-2]
        elif low.endswith("k"):
            mult, part = 1000, part[:-1]
        try:
            n = int(part.replace("_", "")) * mult
        except ValueError:
            raise UserError(f"--sweep-gpus: {short(part)} is not a number of GPUs (write e.g. 1024,4096,16384)"
                            ) from None
        if n <= 0:
            raise UserError(f"--sweep-gpus: GPU counts must be positive, got {n}")
        sizes.append(n)
    if not sizes:
        raise UserError("--sweep-gpus needs GPU counts, e.g. 1024,4096,16384")
    return sizes


def _check_pins(pins: dict[str, Any]) -> None:
    for k in ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch"):
        positive("--" + k.replace("_", "-"), pins.get(k))
    if pins.get("zero") is not None and not 0 <= pins["zero"] <= 3:
        raise UserError(f"--zero must be 0, 1, 2 or 3 (3 = FSDP), got {pins['zero']}")
    choice("--recompute", pins.get("recompute"), RECOMPUTE_CHOICES)
    choice("--precision", pins.get("precision"), PRECISION_CHOICES)


def _console() -> Console:
    import os

    con = Console()
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(width=140)
    return con


def ranking_table(res, intervals: Optional[list[dict]] = None) -> Table:
    """The ranked layouts; with ``intervals`` (one ``uncertainty.estimate_intervals`` per layout of
    ``res.top``), the 80% interval of MFU beside each."""
    t = Table(title=f"best layouts of {res.searched:,} searched ({res.feasible:,} fit in memory), "
                    f"in {res.seconds:.2f} s", title_justify="left")
    for col, just in (("#", "right"), ("layout", "left"), ("step", "right"), ("tokens/s/GPU", "right"),
                      ("MFU (BF16 peak)", "right"), ("GiB/GPU", "right"), ("why slower than #1", "left")):
        t.add_column(col, justify=just)
    for i, e in enumerate(res.top):
        why = "" if i == 0 else res.why_slower[i - 1].split(": ", 1)[-1]
        iv = intervals[i] if intervals else {}
        t.add_row(str(i + 1), layout_label(e.layout), fmt_seconds(e.step_time_s), f"{e.tokens_per_s_per_gpu:,.1f}",
                  f"{e.mfu:.1%}" + interval_text(iv.get("mfu"), "{:.1%}".format), f"{e.memory_gib_per_gpu:.1f}", why)
    if intervals:
        t.caption, t.caption_justify = basis_text(intervals[0]["basis"]) + " (layout #1)", "left"
    return t


def sweep_table(res, intervals: Optional[list[Optional[dict]]] = None) -> Table:
    """The scaling study; with ``intervals`` (one per row, None where nothing fits), the 80% interval of MFU
    and of days per trillion tokens."""
    t = Table(title=f"{res.model} on {res.gpu}: best layout by cluster size (sequence {res.seq_len:,}), "
                    f"in {res.seconds:.2f} s", title_justify="left")
    for col, just in (("GPUs", "right"), ("best layout", "left"), ("MFU (BF16 peak)", "right"), ("step", "right"),
                      ("days / 1T tokens", "right"), ("where efficiency falls, and why", "left")):
        t.add_column(col, justify=just)
    for i, r in enumerate(res.rows):
        if r.best is None:
            t.add_row(f"{r.n_gpus:,}", "[red]nothing fits[/red]", "", "", "", r.reason)
            continue
        iv = (intervals[i] if intervals else None) or {}
        t.add_row(f"{r.n_gpus:,}", layout_label(r.best.layout), f"{r.mfu:.1%}" + interval_text(iv.get("mfu"),
                  "{:.1%}".format), fmt_seconds(r.step_time_s),
                  f"{r.days_per_trillion_tokens:,.2f}" + interval_text(iv.get("days_per_trillion_tokens"),
                                                                       "{:,.2f}".format), r.reason)
    first = next((iv for iv in intervals or [] if iv), None)
    if first:
        t.caption, t.caption_justify = basis_text(first["basis"]) + f" (at {res.rows[0].n_gpus:,} GPUs)", "left"
    return t


def _sweep_intervals(res, spec, gpu) -> list[Optional[dict]]:
    """80% intervals of each sweep row's best layout (None where nothing fits): MFU, step time and days per
    trillion tokens (a time: it scales as the step time)."""
    out = []
    for r in res.rows:
        if r.best is None:
            out.append(None)
            continue
        b = estimate_band(r.best, spec, gpu)
        out.append({"mfu": b.rate(r.mfu), "step_time_s": b.time(r.step_time_s),
                    "days_per_trillion_tokens": b.time(r.days_per_trillion_tokens), "basis": b.basis()})
    return out


def run_plan(*, model: Optional[str], gpu: Optional[str], gpus: Optional[int], global_batch: Optional[int],
             tokens_per_step: Optional[int], seq_len: Optional[int], top: int, pins: dict[str, Any],
             headroom: Optional[float], sweep_gpus: Optional[str], cluster_flags: dict[str, Any],
             stack_flags: dict[str, Any], out: Optional[Path], json_out: bool,
             global_batch_bounds: Optional[tuple[int, int]] = None, tp_across_nodes: bool = False,
             html: Optional[Path] = None, png: Optional[Path] = None, force: bool = False) -> None:
    from ..search import search, sweep
    from .html import write_report

    spec = resolve_model(model)
    if gpu is None:
        raise UserError("--gpu is required (a catalog id such as h100-sxm; `megacluster catalog gpus` lists them)")
    positive("--global-batch", global_batch)
    positive("--tokens-per-step", tokens_per_step)
    positive("--seq-len", seq_len)
    positive("--top", top)
    if global_batch is not None and tokens_per_step is not None:
        raise UserError("give --global-batch (sequences) or --tokens-per-step, not both")
    if headroom is not None and not 0.0 <= headroom < 1.0:
        raise UserError(f"--headroom is the fraction of GPU memory to keep free, in [0, 1); got {headroom}")
    _check_pins(pins)
    stack = resolve_stack(**stack_flags)
    if stack.fp8_params and pins.get("precision") not in (None, "fp8"):
        raise UserError(f"--fp8-params keeps fp8 weights, but --precision {pins['precision']} pins a 16-bit layout; "
                        "pin --precision fp8 (or leave it to the search) or drop --fp8-params")
    kw = dict(global_batch=global_batch, tokens_per_step=tokens_per_step, seq_len=seq_len, stack=stack,
              memory_headroom=headroom or 0.0, pins=pins, global_batch_bounds=global_batch_bounds,
              tp_within_node=not tp_across_nodes)

    if sweep_gpus is not None:
        if out is not None:
            raise UserError("--out saves one plan: give --gpus instead of --sweep-gpus")
        sizes = parse_sizes(sweep_gpus)
        resolve_cluster(gpu, sizes[0], **cluster_flags)            # bad GPU or cluster flags: fail before searching
        with progress_bar(f"searching {len(sizes)} cluster sizes", unit="sizes", quiet=json_out) as bar:
            res = sweep(spec, gpu, sizes, **cluster_flags, progress=bar, **kw)
        ivs = _sweep_intervals(res, spec, resolve_cluster(gpu, sizes[0], **cluster_flags).gpu)
        write_report("sweep", html, png, res)
        if json_out:
            d = res.as_json()
            for row, iv in zip(d["rows"], ivs):
                if iv is not None:
                    row.update(json_fields(iv))
            print_json(d)
            return
        con = _console()
        con.print(sweep_table(res, ivs))
        for note in res.notes:
            con.print(f"note: {note}")
        return

    cluster = resolve_cluster(gpu, gpus, **cluster_flags)
    if out is not None:
        from ..plan_file import check_plan_target

        check_plan_target(out, force)                  # a file that is not a plan: refuse before searching
    bar = ProgressBar(f"searching layouts of {spec.name} on {cluster.n_gpus:,} x {cluster.gpu.id}", "layouts",
                      enabled=False if json_out else None)
    points = None
    if html is not None or png is not None:
        from .html.plan_figs import SearchPoints

        points = SearchPoints()
    try:
        res = search(spec, cluster, top=top, progress=bar, observe=points, **kw)
    finally:
        bar.close()
    write_report("plan", html, png, res, points)
    saved = None
    if out is not None:
        from ..plan_file import save_plan

        saved = save_plan(out, str(model), cluster, res.best.layout, stack, estimate=res.best, force=force)
    ivs = [estimate_intervals(e, spec, cluster.gpu) for e in res.top]
    if json_out:
        d = res.as_json()
        d["best"].update(json_fields(estimate_intervals(res.best, spec, cluster.gpu)))
        for row, iv in zip(d["top"], ivs):
            row.update(json_fields(iv))
        if saved is not None:
            d["saved"] = str(saved)
        print_json(d)
        return
    con = _console()
    con.print(ranking_table(res, ivs))
    for note in res.notes:
        con.print(f"note: {note}")
    con.print(f"\n[bold]best layout[/bold]: {layout_label(res.best.layout)}")
    for t in estimate_tables(res.best, estimate_intervals(res.best, spec, cluster.gpu)):
        con.print(t)
    if saved is not None:
        con.print(f"plan saved to {saved} (read it back with `megacluster estimate --plan {saved}`)")
