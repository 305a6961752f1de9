"""``megacluster calibrate``: argument parsing and printing only (torch is imported when the command runs)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from ..jsonout import print_json


def calibrate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="hardware profile to write (YAML)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", "-g", help="catalog GPU this machine has (checked against "
                                      "the detected one; its data-sheet peak, memory and power are kept)"),
    quick: bool = typer.Option(False, "--quick", help="a smaller sweep (about a minute on a CPU)"),
    procs: Optional[int] = typer.Option(None, "--procs", help="processes for the collective benchmarks (default: "
                                        "the CUDA GPUs, or 2 on a CPU; 1: none)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    from_metrics: Optional[list[Path]] = typer.Option(None, "--from-metrics", help="refine a profile from "
                                                      "measured runs instead (metrics JSONL of `train "
                                                      "--metrics`; repeatable)"),
    hardware: Optional[Path] = typer.Option(None, "--hardware", help="with --from-metrics: the profile to refine"),
    clock: str = typer.Option("wall", "--clock", help="with --from-metrics: wall (step time) or cpu (rank 0's CPU "
                              "time per step, for one-process runs on a shared machine)"),
    tiny: bool = typer.Option(False, "--tiny", hidden=True, help="a seconds-long sweep (tests)"),
    json_out: bool = typer.Option(False, "--json", help="print the fits (or the refinement) as JSON"),
) -> None:
    """Measure this machine (GEMMs, attention, memory bandwidth, op overhead, collectives) and write a hardware
    profile that --hardware on estimate, plan, campaign, validate and train uses in place of the catalog."""
    
    from .profile import write_profile

    if procs is not None and procs < 1:
        raise UserError(f"--procs must be at least 1, got {procs}")
    if from_metrics:
        from .refine import refine

        result = refine(from_metrics, hardware, out, clock)
        if json_out:
            print_json(result)
        else:
            _print_refinement(result, out)
        return
    if hardware:
        raise UserError("--hardware goes with --from-metrics (the profile to refine)")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("megacluster calibrate needs PyTorch: pip install 'megacluster[train]'") from None
    from rich.console import Console

    from .measure import calibrate

    con = Console(stderr=True)
    with _progress(con) as (plan, tick):
        prof = calibrate(gpu=gpu, quick=quick, procs=procs, device=device, tiny=tiny, tick=tick, plan=plan)
    write_profile(out, prof)
    if json_out:
        print_json({"out": str(out), "gpus": prof["gpus"], "fits": prof["fits"]})
        return
    _print_summary(prof, out)


@contextlib.contextmanager
def _progress(con):
    """(plan, tick) callbacks of a rich progress bar on a terminal; silent otherwise."""
    if not con.is_terminal:
        yield (lambda n: None), (lambda kind: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("calibrate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[kind]}"), console=con, transient=True) as p:
        task = p.add_task("calibrate", total=None, kind="")
        yield (lambda n: p.update(task, total=n)), (lambda kind: p.update(task, advance=1, kind=kind))


def _out_console():
    """Rich console on stdout, 140 columns when it is not a terminal."""
    from rich.console import Console

    con = Console(highlight=False)
    return con if con.is_terminal else Console(highlight=False, width=140)


def _print_summary(prof: dict, out: Path) -> None:
    from rich.table import Table

    con = _out_console()
    m = prof["measured"]
    con.print(f"[bold]calibrated[/] {m['device']} on {m['host']} ({m['date']}; torch {m['torch']}, "
              f"{'quick' if m['quick'] else 'full'} sweep)")
    t = Table(title="fitted constants")
    for c in ("device", "peak TFLOP/s", "GEMM eff.", "K0", "attention eff.", "s0", "bwd ratio", "memory GB/s",
              "op us", "link GB/s", "latency us"):
        t.add_column(c, justify="left" if c == "device" else "right")
    for e in prof["gpus"]:
        f = prof["fits"][e["id"]]
        mem = f["memory"]["bytes_per_s"] / 1e9
        coll = f.get("collectives") or {}
        t.add_row(e["id"], f"{f['peak_flops'] / 1e12:.4g}", f"{e['gemm_efficiency']:.2f}",
                  f"{e['gemm_k_overhead']:.3g}", f"{e['attention_efficiency']:.2f}", f"{e['attention_half_seq']:.3g}",
                  f"{e['attention_bwd_ratio']:.2f}", f"{mem:.3g}", f"{e.get('op_overhead_us', 0):.3g}",
                  f"{coll['bytes_per_s'] / 1e9:.3g}" if coll else "-",
                  f"{coll['latency_s'] * 1e6:.3g}" if coll else "-")
    con.print(t)
    _print_parallel(con, prof)
    skipped = next(iter(prof["points"].values())).get("collectives_skipped") or []
    for s in skipped:
        con.print(f"[yellow]collective not measured: {s}[/]")
    ids = ", ".join(e["id"] for e in prof["gpus"])
    con.print(f"wrote {out} (devices {ids}); use it with --hardware {out}")
    sys.stdout.flush()


def _print_parallel(con, prof: dict) -> None:
    """What the CPU stack variant holds: DTensor TP and FSDP2 host work measured on the runtime's tiny model."""
    for st in prof.get("stacks") or []:
        c = (st.get("by_generation") or {}).get("cpu") or {}
        if "dtensor_op_us" in c:
            con.print(f"DTensor TP: {c['eager_ops_tp_layer_fwd']:g} + {c['eager_ops_tp_layer_bwd']:g} DTensor ops per "
                      f"layer (forward + backward, counted) x {c['dtensor_op_us']:.3g} us each; clipping + AdamW "
                      f"over DTensor parameters {c.get('tp_optimizer_layer_s', 0) * 1e3:.3g} ms per layer")
        if "fsdp_layer_overhead_s" in c:
            con.print(f"FSDP2: {c['fsdp_layer_overhead_s'] * 1e3:.3g} ms per layer and micro-batch; clipping + AdamW "
                      f"{c.get('fsdp_optimizer_layer_s', 0) * 1e3:.3g} ms per layer")


def _print_refinement(r: dict, out: Path) -> None:
    from rich.table import Table

    con = _out_console()
    t = Table(title=f"refined from {len(r['runs'])} measured run(s): {r['method']}")
    for c in ("run", "measured s", "predicted before", "error before", "predicted after", "error after"):
        t.add_column(c, justify="left" if c == "run" else "right")
    for run in r["runs"]:
        t.add_row(run["name"], f"{run['measured_s']:.4g}", f"{run['before_s']:.4g}", f"{run['error_before']:+.1%}",
                  f"{run['after_s']:.4g}", f"{run['error_after']:+.1%}")
    con.print(t)
    for k, (a, b) in r["moved"].items():
        con.print(f"  {k}: {a:.4g} -> {b:.4g}")
    if not r["moved"]:
        con.print("  no constant moved (the runs match the prediction)")
    con.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
