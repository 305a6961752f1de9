"""The core commands: ``estimate``, ``validate``, ``catalog`` and ``plan``. Argument parsing and printing only;
the figures come from :mod:`megacluster.estimate`, :mod:`megacluster.validate` and :mod:`megacluster.search`."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from ..calibrate.options import HARDWARE
from ..calibrate.profile import use_hardware
from ..errors import UserError

# ------------------------------------------------------------------------------------------ shared options
_MODEL = typer.Option(None, "--model", "-m", help="catalog model id (llama3.1-405b, gpt3-175b, ...) or a path to a "
                      "Hugging Face config.json or model YAML")
_GPU = typer.Option(None, "--gpu", "-g", help="accelerator id (h100-sxm, a100-80gb, h800, b200, ...)")
_GPUS = typer.Option(None, "--gpus", "-n", help="number of GPUs")
_FABRIC = typer.Option(None, "--fabric", help="scale-out fabric id (default: the GPU generation's usual one)")
_NIC = typer.Option(None, "--nic-gbps", help="line rate of one NIC, Gb/s")
_NICS = typer.Option(None, "--nics-per-node", help="NICs per node (default: one per GPU)")
_GPN = typer.Option(None, "--gpus-per-node", help="GPUs per node (default 8)")
_FRAMEWORK = typer.Option(None, "--framework", help="software stack: megatron, torchtitan, deepspeed, ... "
                          "(`megacluster catalog stacks`)")
_COMPILE = typer.Option(None, "--compile/--no-compile", help="torch.compile-fused elementwise kernels")
_ASYNC_TP = typer.Option(None, "--async-tp/--no-async-tp", help="async (micro-pipelined) tensor parallelism")
_FP8_RECIPE = typer.Option(None, "--fp8-recipe", help="fp8 scaling recipe: tensorwise, rowwise, delayed, "
                           "blockwise or mxfp8")
_SCHEDULE = typer.Option(None, "--schedule", help="pipeline schedule: 1f1b (interleaved when vp > 1), zb-h1, "
                         "dualpipe (two stages per rank) or dualpipe-v (default: the stack's)")
_FP8_PARAMS = typer.Option(None, "--fp8-params/--no-fp8-params", help="with --precision fp8, keep the weights in "
                           "fp8 (NeMo FP8_PARAMS): parameter all-gathers move 1 byte per parameter")
_TP_OVERLAP = typer.Option(None, "--tp-overlap", help="TP communication overlap: chunked (collective matmul, "
                           "e.g. Transformer Engine userbuffers) or none (default: the stack's)")
_DP_BUCKET = typer.Option(None, "--dp-bucket-params", help="parameters per data-parallel gradient bucket "
                          "(Megatron-Core bucket_size; default: the stack's rule)")
_ALIGN_PG = typer.Option(None, "--align-param-gather/--no-align-param-gather", help="Megatron-Core's "
                         "align_param_gather: without an interleaved schedule (vp 1) the weights' all-gathers are "
                         "not prefetched and the forward waits for each")
_JSON = typer.Option(False, "--json", help="print one JSON object instead of tables")
_HTML = typer.Option(None, "--html", help="also write an interactive HTML report (one file, no network needed)")
_PNG = typer.Option(None, "--png", help="also write the main figure as a PNG (needs kaleido and Chromium)")


def _console() -> Console:
    """Rich console on stdout; 140 columns when stdout is not a terminal (files, pipes) unless COLUMNS says."""
    con = Console()
    if not con.is_terminal and "COLUMNS" not in os.environ:
        con = Console(width=140)
    return con


def _print_json(obj: Any) -> None:
    from ..jsonout import print_json

    print_json(obj)


def _pick(flag: Any, planned: Any) -> Any:
    """The flag's value where given, else the plan's."""
    return planned if flag is None else flag


def _given(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _rederive_vp(spec: Any, layout: Any, vp_flag: Optional[int], base: dict) -> tuple[Any, Optional[str]]:
    """A plan's interleaving (vp > 1, not given as a flag) that the overrides no longer allow, because the
    micro-batches are no longer whole rounds of pp or pp*vp exceeds the layers, falls back to vp 1: (layout,
    the one line saying so, or None)."""
    if vp_flag is not None or layout.vp == 1 or not base.get("vp") or layout.pp == 1:
        return layout, None
    n_micro = layout.n_microbatches
    if n_micro % layout.pp == 0 and layout.pp * layout.vp <= spec.n_layers:
        return layout, None
    why = (f"{n_micro} micro-batches are not whole rounds of pp={layout.pp}" if n_micro % layout.pp
           else f"pp*vp = {layout.pp * layout.vp} chunks is more than the {spec.n_layers} layers")
    return (layout.model_copy(update={"vp": 1}),
            f"vp {layout.vp} -> 1: the plan's interleaved schedule no longer fits ({why}); pass --vp to choose")


# ------------------------------------------------------------------------------------------ estimate
def estimate_cmd(
    model: Optional[str] = _MODEL,
    gpu: Optional[str] = _GPU,
    gpus: Optional[int] = _GPUS,
    tp: Optional[int] = typer.Option(None, "--tp", help="tensor-parallel degree"),
    pp: Optional[int] = typer.Option(None, "--pp", help="pipeline-parallel degree"),
    dp: Optional[int] = typer.Option(None, "--dp", help="data-parallel degree (default GPUs/(tp pp cp))"),
    cp: Optional[int] = typer.Option(None, "--cp", help="context-parallel degree"),
    ep: Optional[int] = typer.Option(None, "--ep", help="expert-parallel degree (MoE)"),
    vp: Optional[int] = typer.Option(None, "--vp", help="virtual pipeline stages per GPU (interleaved)"),
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", help="sequences per micro-batch"),
    global_batch: Optional[int] = typer.Option(None, "--global-batch",
                                               help="sequences per step (default: about 4M tokens)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="tokens per sequence (default: "
                                          "the model's)"),
    recompute: Optional[str] = typer.Option(None, "--recompute", help="none, selective (default) or full"),
    zero: Optional[int] = typer.Option(None, "--zero", help="ZeRO stage 0-3 (3 = FSDP; default 1)"),
    dp_replicate: Optional[int] = typer.Option(None, "--dp-replicate", help="HSDP/MiCS: replicas of the "
                                               "ZeRO-sharded state, each sharded over dp*cp/N GPUs (default 1)"),
    precision: Optional[str] = typer.Option(None, "--precision", help="bf16 (default), fp16 or fp8"),
    sequence_parallel: Optional[bool] = typer.Option(None, "--sequence-parallel/--no-sequence-parallel",
                                                     help="sequence parallelism with TP (default on)"),
    fabric: Optional[str] = _FABRIC,
    nic_gbps: Optional[float] = _NIC,
    nics_per_node: Optional[int] = _NICS,
    gpus_per_node: Optional[int] = _GPN,
    framework: Optional[str] = _FRAMEWORK,
    compile: Optional[bool] = _COMPILE,
    async_tp: Optional[bool] = _ASYNC_TP,
    fp8_recipe: Optional[str] = _FP8_RECIPE,
    schedule: Optional[str] = _SCHEDULE,
    fp8_params: Optional[bool] = _FP8_PARAMS,
    tp_overlap: Optional[str] = _TP_OVERLAP,
    dp_bucket_params: Optional[int] = _DP_BUCKET,
    align_param_gather: Optional[bool] = _ALIGN_PG,
    plan: Optional[Path] = typer.Option(None, "--plan", help="plan file (from `megacluster plan --out`); flags "
                                        "given as well override it"),
    json_out: bool = _JSON,
    html: Optional[Path] = _HTML,
    png: Optional[Path] = _PNG,
    hardware: Optional[Path] = HARDWARE,
) -> None:
    """Predict one training step: time, memory and FLOPs per GPU for a model, cluster and layout."""
    gpu = use_hardware(hardware, gpu)
    from ..estimate import estimate
    from .fit import does_not_fit_message
    from .inputs import Plan, read_plan, resolve_cluster, resolve_layout, resolve_model, resolve_stack
    from .tables import estimate_tables

    p = read_plan(plan) if plan else Plan()
    spec = resolve_model(_pick(model, p.model))
    given = _given(fabric=fabric, nic_gbps=nic_gbps, nics_per_node=nics_per_node, gpus_per_node=gpus_per_node)
    planned = dict(p.cluster)
    if "gpus_per_node" in given:
        planned.pop("nvlink_domain", None)      # the plan's NVLink domain was its node's
    cluster = resolve_cluster(_pick(gpu, p.gpu), _pick(gpus, p.gpus), **{**planned, **given})
    stack = resolve_stack(framework, base=p.stack, compile=compile, async_tp=async_tp, fp8_recipe=fp8_recipe,
                          schedule=schedule, fp8_params=fp8_params, tp_overlap=tp_overlap,
                          dp_bucket_params=dp_bucket_params, align_param_gather=align_param_gather)
    flags = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, micro_batch=micro_batch, global_batch=global_batch,
                 seq_len=seq_len, recompute=recompute, zero=zero, precision=precision,
                 sequence_parallel=sequence_parallel, dp_replicate=dp_replicate)
    base = dict(p.layout)
    if dp is None and any(v is not None for v in (gpus, tp, pp, cp)):
        base.pop("dp", None)        # the plan's dp no longer multiplies out: derive it again
    layout = resolve_layout(spec, cluster, flags, base=base)
    layout, rederived = _rederive_vp(spec, layout, vp, base)
    if stack.fp8_params and layout.precision != "fp8":
        raise UserError(f"--fp8-params keeps fp8 weights, but this layout trains in {layout.precision}; add "
                        "--precision fp8 or drop --fp8-params")
    est = estimate(spec, cluster, layout, stack)
    if not est.fits:
        raise UserError(does_not_fit_message(spec, cluster, layout, stack, est))
    from ..uncertainty import estimate_intervals, json_fields
    from .html import write_report

    if rederived:
        print(rederived, file=sys.stderr if json_out else sys.stdout)
    intervals = estimate_intervals(est, spec, cluster.gpu)
    write_report("estimate", html, png, est)
    if json_out:
        _print_json({**est.model_dump(mode="json"), **json_fields(intervals)})
        return
    con = _console()
    for t in estimate_tables(est, intervals):
        con.print(t)


# ------------------------------------------------------------------------------------------ validate
def validate_cmd(
    runs: Optional[str] = typer.Option(None, "--runs", help="runs file in the format of runs.yaml, or a set kept "
                                       "in the catalog: 'published' (the default: the team's validation runs) or "
                                       "'more' (further published runs the project gathered)"),
    json_out: bool = _JSON,
    html: Optional[Path] = _HTML,
    png: Optional[Path] = _PNG,
    hardware: Optional[Path] = HARDWARE,
) -> None:
    """Predict every published training run and score the error (MAPE and worst, overall and per group)."""
    use_hardware(hardware)
    from ..validate import load_runs, validate_runs
    from .validation_view import as_json, runs_table, skipped_table, summary_table

    data = load_runs(runs)
    if not data:
        raise UserError(f"{runs or 'runs'}: the runs list is empty")
    from .html import write_report
    from .progress import progress_bar

    with progress_bar("predicting runs", unit="runs", quiet=json_out) as bar:
        result = validate_runs(data, progress=bar)
    write_report("validate", html, png, result, data)
    if json_out:
        _print_json(as_json(result))
        return
    con = _console()
    con.print(runs_table(result))
    con.print(summary_table(result))
    if result["skipped"]:
        con.print(skipped_table(result))


# ------------------------------------------------------------------------------------------ catalog
def catalog_cmd(
    kind: Optional[str] = typer.Argument(None, help="gpus, models, fabrics, stacks, scenarios or sites (none: "
                                         "list every id)"),
    entry: Optional[str] = typer.Argument(None, help="one entry's id: print all its fields and full source"),
    full: bool = typer.Option(False, "--full", help="print sources in full"),
    json_out: bool = _JSON,
) -> None:
    """List the catalog: accelerators, models, fabrics and software stacks, with key figures and sources."""
    from .catalog_view import KINDS, TABLES, entries, entry_table, find_entry

    kind = kind.strip().lower() if kind else kind          # `catalog GPUs H100-SXM` as `catalog gpus h100-sxm`
    if json_out:
        kinds = [kind] if kind else list(KINDS)
        out = {k: entries(k) for k in kinds}
        if entry:
            out = {"entry": find_entry(kind, entry)}
        _print_json(out)
        return
    con = _console()
    if kind is None:
        for k in KINDS:
            con.print(f"[bold]{k}[/bold] ({len(entries(k))}): " + ", ".join(e["id"] for e in entries(k)))
        con.print("`megacluster catalog KIND` shows key figures and sources; `megacluster catalog KIND ID` one "
                  "entry in full.")
        return
    if entry:
        entries(kind)
        con.print(entry_table(kind, entry))
        return
    if kind not in TABLES:
        entries(kind)                               # raises the unknown-name error
    con.print(TABLES[kind](full))


# ------------------------------------------------------------------------------------------ plan
def plan_cmd(
    model: Optional[str] = _MODEL,
    gpu: Optional[str] = _GPU,
    gpus: Optional[int] = _GPUS,
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="sequences per step"),
    tokens_per_step: Optional[int] = typer.Option(None, "--tokens-per-step",
                                                  help="tokens per step (instead of --global-batch)"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="tokens per sequence (default: the "
                                          "model's)"),
    global_batch_min: Optional[int] = typer.Option(None, "--global-batch-min", help="lowest global batch a "
                                                   "layout may take (with --global-batch-max)"),
    global_batch_max: Optional[int] = typer.Option(None, "--global-batch-max", help="highest global batch a "
                                                   "layout may take"),
    top: int = typer.Option(5, "--top", help="how many layouts to show"),
    tp: Optional[int] = typer.Option(None, "--tp", help="pin the tensor-parallel degree"),
    pp: Optional[int] = typer.Option(None, "--pp", help="pin the pipeline degree"),
    dp: Optional[int] = typer.Option(None, "--dp", help="pin the data-parallel degree"),
    cp: Optional[int] = typer.Option(None, "--cp", help="pin the context-parallel degree"),
    ep: Optional[int] = typer.Option(None, "--ep", help="pin the expert-parallel degree"),
    vp: Optional[int] = typer.Option(None, "--vp", help="pin the virtual pipeline stages"),
    micro_batch: Optional[int] = typer.Option(None, "--micro-batch", help="pin the micro-batch"),
    recompute: Optional[str] = typer.Option(None, "--recompute", help="pin recompute: none, selective, full"),
    zero: Optional[int] = typer.Option(None, "--zero", help="pin the ZeRO stage (3 = FSDP)"),
    precision: Optional[str] = typer.Option(None, "--precision", help="pin the precision: bf16, fp16, fp8"),
    headroom: Optional[float] = typer.Option(None, "--headroom", help="fraction of GPU memory to keep free "
                                             "(e.g. 0.1)"),
    tp_across_nodes: bool = typer.Option(False, "--tp-across-nodes", help="let TP span more than one NVLink "
                                         "domain"),
    sweep_gpus: Optional[str] = typer.Option(None, "--sweep-gpus", help="scaling study over GPU counts, e.g. "
                                             "1024,4096,16384,100000"),
    fabric: Optional[str] = _FABRIC,
    nic_gbps: Optional[float] = _NIC,
    nics_per_node: Optional[int] = _NICS,
    gpus_per_node: Optional[int] = _GPN,
    framework: Optional[str] = _FRAMEWORK,
    compile: Optional[bool] = _COMPILE,
    async_tp: Optional[bool] = _ASYNC_TP,
    fp8_recipe: Optional[str] = _FP8_RECIPE,
    schedule: Optional[str] = _SCHEDULE,
    fp8_params: Optional[bool] = _FP8_PARAMS,
    tp_overlap: Optional[str] = _TP_OVERLAP,
    dp_bucket_params: Optional[int] = _DP_BUCKET,
    align_param_gather: Optional[bool] = _ALIGN_PG,
    out: Optional[Path] = typer.Option(None, "--out", help="save the best plan as YAML (read by estimate --plan)"),
    force: bool = typer.Option(False, "--force", help="let --out replace a file that is not a megacluster plan"),
    json_out: bool = _JSON,
    html: Optional[Path] = _HTML,
    png: Optional[Path] = _PNG,
    hardware: Optional[Path] = HARDWARE,
) -> None:
    """Find the fastest layout that fits for a model on a cluster (or, with --sweep-gpus, on several sizes)."""
    gpu = use_hardware(hardware, gpu)
    from .plan_view import run_plan

    run_plan(model=model, gpu=gpu, gpus=gpus, global_batch=global_batch, tokens_per_step=tokens_per_step,
             seq_len=seq_len, top=top, pins=_given(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, micro_batch=micro_batch,
                                                   recompute=recompute, zero=zero, precision=precision),
             headroom=headroom, sweep_gpus=sweep_gpus,
             cluster_flags=_given(fabric=fabric, nic_gbps=nic_gbps, nics_per_node=nics_per_node,
                                  gpus_per_node=gpus_per_node),
             stack_flags=dict(framework=framework, compile=compile, async_tp=async_tp, fp8_recipe=fp8_recipe,
                              schedule=schedule, fp8_params=fp8_params, tp_overlap=tp_overlap,
                              dp_bucket_params=dp_bucket_params, align_param_gather=align_param_gather),
             out=out, json_out=json_out, global_batch_bounds=_bounds(global_batch_min, global_batch_max),
             tp_across_nodes=tp_across_nodes, html=html, png=png, force=force)


def _bounds(lo: Optional[int], hi: Optional[int]) -> Optional[tuple[int, int]]:
    if lo is None and hi is None:
        return None
    if lo is None or hi is None:
        raise UserError("give both --global-batch-min and --global-batch-max")
    if lo < 1 or hi < lo:
        raise UserError(f"global batch bounds must satisfy 1 <= --global-batch-min <= --global-batch-max, "
                        f"got {lo} and {hi}")
    return lo, hi


def register(app: typer.Typer) -> None:
    """Add ``estimate``, ``validate``, ``catalog`` and ``plan`` to the megacluster app."""
    app.command("estimate")(estimate_cmd)
    app.command("validate")(validate_cmd)
    app.command("catalog")(catalog_cmd)
    app.command("plan")(plan_cmd)
