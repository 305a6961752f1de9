"""``megacluster train``: argument parsing only. PyTorch is imported when the command runs, so that the rest of
megacluster works without it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..calibrate.options import HARDWARE
from ..errors import UserError

INSTALL_HINT = "megacluster train needs PyTorch: pip install 'megacluster[train]'"


def check_flags(**flags) -> None:
    """Refuse, with one line, flag values no run can use (before any process group or model exists)."""
    import math

    for name in ("layers", "d_model", "heads", "kv_heads", "ffn", "vocab", "experts", "top_k", "tp", "dp", "pp",
                 "cp", "ep", "vp", "dp_replicate", "micro_batch", "global_batch", "seq_len", "gpus", "steps",
                 "log_every", "keep"):
        v = flags.get(name)
        if v is not None and v <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {v}")
    for name in ("lr", "weight_decay", "clip"):
        v = flags.get(name)
        if v is not None and not math.isfinite(v):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {v}")
    if flags.get("lr") is not None and flags["lr"] <= 0:
        raise UserError(f"--lr must be positive, got {flags['lr']}")
    for name in ("weight_decay", "clip", "warmup", "checkpoint_every"):
        v = flags.get(name)
        if v is not None and v < 0:
            raise UserError(f"--{name.replace('_', '-')} must be zero or more, got {v}")
    if flags.get("zero") is not None and not 0 <= flags["zero"] <= 3:
        raise UserError(f"--zero must be 0, 1, 2 or 3 (3 = FSDP), got {flags['zero']}")
    if flags.get("precision") is not None and flags["precision"] not in PRECISIONS:
        raise UserError(f"--precision {flags['precision']}: use one of {', '.join(PRECISIONS)}")
    if flags.get("schedule") is not None:
        from .pipeline import check_schedule_name

        check_schedule_name(flags["schedule"])
    from .. import catalog

    if flags.get("gpu"):
        catalog.gpu(flags["gpu"])          # unknown names: one line with the closest ids
    if flags.get("fabric"):
        catalog.fabric(flags["fabric"])


#: compute precisions the runtime takes (fp8: torchao float8 linears with bf16 elsewhere)
PRECISIONS = ("bf16", "fp16", "fp32", "fp8")


def tokenizer_vocab(tokenizer: str) -> int | None:
    """Vocabulary of the tokenizer named on the command line, when it is known before any data is read."""
    if tokenizer == "byte":
        return 256
    if tokenizer.startswith("bpe:") and tokenizer[4:].isdigit():
        return int(tokenizer[4:])
    return None


def build_config(*, plan: Optional[Path], model: Optional[str], layers: Optional[int], d_model: Optional[int],
                 heads: Optional[int], kv_heads: Optional[int], ffn: Optional[int], vocab: Optional[int],
                 experts: Optional[int], top_k: Optional[int], tp: Optional[int], dp: Optional[int],
                 pp: Optional[int], cp: Optional[int], ep: Optional[int], micro_batch: Optional[int],
                 global_batch: Optional[int], seq_len: Optional[int], sequence_parallel: Optional[bool],
                 recompute: Optional[str], zero: Optional[int], precision: Optional[str], world: int,
                 cuda: bool, gpu: Optional[str], gpus: Optional[int], fabric: Optional[str],
                 vp: Optional[int] = None, schedule: Optional[str] = None, fp8_recipe: Optional[str] = None,
                 dp_replicate: Optional[int] = None, **rest):
    """A :class:`TrainConfig` from the plan (if any) with the flags given on top (no torch needed).

    A plan's layout is fitted to the ``world`` processes of this run and to a scaled-down model
    (:func:`~megacluster.runtime.plan.fit_layout`); what changed is kept in ``TrainConfig.changed`` (one line)."""
    from pydantic import ValidationError

    from .. import catalog
    from ..specs import Layout
    from .config import TINY, TrainConfig
    from .model_spec import scale_model
    from .parallel import check_layout
    from .plan import fit_layout, read_plan

    check_flags(layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn=ffn, vocab=vocab,
                experts=experts, top_k=top_k, tp=tp, dp=dp, pp=pp, cp=cp, ep=ep, vp=vp, dp_replicate=dp_replicate,
                micro_batch=micro_batch, global_batch=global_batch, seq_len=seq_len, zero=zero, precision=precision,
                gpu=gpu, gpus=gpus, fabric=fabric, schedule=schedule, **{k: rest.get(k) for k in (
                    "lr", "weight_decay", "clip", "warmup", "checkpoint_every", "steps", "log_every", "keep")})
    rp = read_plan(plan) if plan else None
    base = catalog.model(model) if model else (rp.model if rp else TINY)
    shaped = any(v is not None for v in (layers, d_model, heads, kv_heads, ffn))
    tok_vocab = tokenizer_vocab(rest.get("tokenizer", "byte"))
    if shaped and vocab is None and tok_vocab and base.vocab > tok_vocab:
        vocab = tok_vocab                   # a scaled-down copy needs no more outputs than the tokenizer has
    spec = scale_model(base, layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn=ffn, vocab=vocab,
                       experts=experts, top_k=top_k)
    changed: list[str] = []
    if spec.n_heads != base.n_heads and heads is None:
        changed.append(f"heads {base.n_heads} -> {spec.n_heads} (kv {base.kv_heads} -> {spec.kv_heads})")
    if spec.vocab != base.vocab and shaped and vocab == tok_vocab:
        changed.append(f"vocab {base.vocab} -> {spec.vocab}")
    lay = dict(rp.layout) if rp else {}
    given = {"tp": tp, "dp": dp, "pp": pp, "cp": cp, "ep": ep, "vp": vp, "micro_batch": micro_batch,
             "global_batch": global_batch, "seq_len": seq_len, "sequence_parallel": sequence_parallel,
             "recompute": recompute, "zero": zero, "dp_replicate": dp_replicate}
    lay.update({k: v for k, v in given.items() if v is not None})
    plan_precision = lay.pop("precision", None)
    if precision:
        prec = precision
    elif cuda:
        prec = plan_precision or "bf16"
    else:
        # on CPU: fp32, except an fp8 plan, which trains in bf16 and says so in one line (fp8.py)
        prec = "fp8" if plan_precision == "fp8" else "fp32"
        if plan_precision and plan_precision not in ("fp32", "fp8"):
            changed.append(f"precision {plan_precision} -> fp32 (CPU; pass --precision to choose)")
    from .fp8 import check_recipe

    if fp8_recipe and prec != "fp8":
        raise UserError(f"--fp8-recipe {fp8_recipe} applies to fp8 training; add --precision fp8 or drop the flag")
    recipe = check_recipe(fp8_recipe or (rp.stack.fp8_recipe if rp and rp.stack else None)) if prec == "fp8" \
        else None
    sched = schedule or (rp.schedule if rp else "1f1b")
    planned_world = (lay.get("tp", 1) * lay.get("pp", 1) * lay.get("dp", 1) * lay.get("cp", 1)) if rp else 0
    if rp and (shaped or planned_world == world):
        # a scaled-down copy of the plan's model, or the plan's own process count: fit what no longer fits
        # (the plan's model at full size on other hardware is refused below with the process count it needs)
        from .pipeline import needs_multiple

        lay, more = fit_layout(lay, spec, world, {k for k, v in given.items() if v is not None},
                               scaled_width=(spec.d_model / base.d_model) if d_model else None,
                               pipeline_multiple=needs_multiple(sched, lay.get("vp", 1)))
        changed[:0] = more
        from .pipeline import SCHEDULES

        row = SCHEDULES.get(sched)
        if lay.get("pp", 1) > 1 and row is not None:
            if row.vp is not None and vp is None and lay.get("vp", 1) != row.vp:
                changed.append(f"vp {lay.get('vp', 1)} -> {row.vp} (the {sched} schedule)")
                lay["vp"] = row.vp
            if row.split_backward and recompute is None and lay.get("recompute") == "selective":
                changed.append(f"recompute selective -> full (the {sched} schedule's split backward)")
                lay["recompute"] = "full"
    lay.setdefault("tp", 1)
    lay.setdefault("dp", max(1, world // (lay["tp"] * lay.get("pp", 1) * lay.get("cp", 1))))
    lay.setdefault("micro_batch", 8 if not rp else 1)
    lay.setdefault("global_batch", lay["micro_batch"] * lay["dp"])
    lay.setdefault("seq_len", min(spec.seq_len, 2048) if (model or rp) else spec.seq_len)
    lay.setdefault("recompute", "none")
    lay.setdefault("zero", 3)
    try:
        layout = Layout(**{**lay, "precision": prec if prec != "fp32" else "bf16"})
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, "layout")) from None
    cfg = TrainConfig(model=spec, layout=layout, precision=prec, gpu=gpu or (rp.gpu if rp and cuda else None),
                      gpus=gpus, fabric=fabric or (rp.fabric if rp else None), stack=rp.stack if rp else None,
                      schedule=sched, changed=("; ".join(changed) if changed else None), fp8_recipe=recipe, **rest)
    check_layout(layout, spec, world, sched)
    return cfg


def train(
    plan: Optional[Path] = typer.Option(None, help="plan file (YAML: model, gpu, gpus, fabric, layout, stack); "
                                                   "flags below override it"),
    model: Optional[str] = typer.Option(None, help="catalog model or config.json path (default: a tiny Llama)"),
    layers: Optional[int] = typer.Option(None, help="scale down: number of layers"),
    d_model: Optional[int] = typer.Option(None, help="scale down: model width (FFN widths keep their ratio)"),
    heads: Optional[int] = typer.Option(None, help="scale down: attention heads"),
    kv_heads: Optional[int] = typer.Option(None, help="scale down: key/value heads"),
    ffn: Optional[int] = typer.Option(None, help="scale down: FFN hidden width"),
    vocab: Optional[int] = typer.Option(None, help="vocabulary size (the byte tokenizer needs 256)"),
    experts: Optional[int] = typer.Option(None, help="routed experts per MoE layer (adds MoE to a dense model)"),
    top_k: Optional[int] = typer.Option(None, help="experts per token"),
    tp: Optional[int] = typer.Option(None, help="tensor-parallel degree"),
    dp: Optional[int] = typer.Option(None, help="data-parallel (FSDP) degree (default: processes / (tp x pp x cp))"),
    pp: Optional[int] = typer.Option(None, help="pipeline ranks (with dp and tp on one 3-D device mesh)"),
    vp: Optional[int] = typer.Option(None, help="pipeline stages per pipeline rank (> 1: interleaved)"),
    schedule: Optional[str] = typer.Option(None, help="pipeline schedule: 1f1b (interleaved when vp > 1), "
                                                      "zb-h1, zero-bubble, dualpipe-v, or dualpipe (run as "
                                                      "dualpipe-v) (default: the plan's stack's)"),
    cp: Optional[int] = typer.Option(None, help="context-parallel degree (ring attention over cp ranks)"),
    ep: Optional[int] = typer.Option(None, help="expert-parallel degree (experts split over ep of the dp*cp ranks)"),
    micro_batch: Optional[int] = typer.Option(None, help="sequences per micro-batch per dp rank (default 8)"),
    global_batch: Optional[int] = typer.Option(None, help="sequences per step (default dp x micro-batch)"),
    seq_len: Optional[int] = typer.Option(None, help="tokens per sequence"),
    sequence_parallel: Optional[bool] = typer.Option(None, "--sequence-parallel/--no-sequence-parallel",
                                                     help="shard norms/residuals along the sequence (tp > 1)"),
    recompute: Optional[str] = typer.Option(None, help="activation checkpointing: none, selective or full"),
    zero: Optional[int] = typer.Option(None, help="3: reshard weights after forward (FSDP); 0-2: keep them"),
    dp_replicate: Optional[int] = typer.Option(None, help="HSDP: replicas of the sharded state; each shards over "
                                               "dp*cp/N neighbouring ranks, the N replicas all-reduce gradients "
                                               "(default 1: plain FSDP over dp*cp)"),
    precision: Optional[str] = typer.Option(None, help="bf16, fp16, fp32 or fp8 (default: the plan's on GPU, "
                                                       "fp32 on CPU; an fp8 plan trains in bf16 on CPU)"),
    fp8_recipe: Optional[str] = typer.Option(None, help="fp8 scaling (torchao): tensorwise or rowwise "
                                                        "(default: the plan's, else tensorwise)"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile each transformer block"),
    steps: int = typer.Option(100, help="optimizer steps in total (a resumed run stops at the same step)"),
    lr: float = typer.Option(3e-3, help="peak learning rate (AdamW)"),
    warmup: int = typer.Option(10, help="linear warm-up steps"),
    weight_decay: float = typer.Option(0.1, help="AdamW weight decay"),
    clip: float = typer.Option(1.0, help="gradient-norm clip (0: off)"),
    seed: int = typer.Option(0, help="random seed (weights, data order)"),
    data: str = typer.Option("python", help="`python` (CPython's docs and stdlib sources), a .txt/.jsonl file, "
                                            "a directory, or a saved Hugging Face dataset"),
    tokenizer: str = typer.Option("byte", help="byte, or bpe:N (BPE trained on the data; needs `tokenizers`)"),
    text_key: str = typer.Option("text", help="field holding the text in .jsonl files and datasets"),
    checkpoint_dir: Optional[Path] = typer.Option(None, help="where checkpoints go"),
    checkpoint_every: int = typer.Option(0, help="save every N steps (0: only at the end)"),
    keep: int = typer.Option(3, help="checkpoints to keep"),
    resume: Optional[str] = typer.Option(None, help="`auto` (newest valid checkpoint) or a step_* directory"),
    metrics: Optional[Path] = typer.Option(None, help="JSONL file for per-step metrics"),
    log_every: int = typer.Option(10, help="print a line every N steps"),
    gpu: Optional[str] = typer.Option(None, help="catalog GPU id for the peak and the prediction "
                                                 "(autodetected on CUDA)"),
    gpus: Optional[int] = typer.Option(None, help="GPU count for the prediction (default: processes)"),
    fabric: Optional[str] = typer.Option(None, help="catalog fabric for the prediction"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    json_out: bool = typer.Option(False, "--json", help="print one JSON object (summary) on stdout"),
    hardware: Optional[Path] = HARDWARE,
) -> None:
    """Train a Llama-architecture model with a plan's layout (launch with torchrun for several processes)
    and compare the measured throughput with megacluster's prediction."""
    import os

    rank = os.environ.get("RANK", "0")
    try:
        if resume and resume != "auto" and not Path(resume).exists():
            raise UserError(f"--resume {resume}: no such checkpoint directory (give a step_* directory or auto)")
        check_flags(steps=steps, log_every=log_every, keep=keep, lr=lr, warmup=warmup,
                    checkpoint_every=checkpoint_every, weight_decay=weight_decay, clip=clip)
        if hardware:
            from ..calibrate.profile import use_hardware

            use_hardware(hardware, gpu)        # a malformed profile, or one for another GPU: one line, exit 2
        try:
            import torch  # noqa: F401
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
        cfg = build_config(plan=plan, model=model, layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads,
                           ffn=ffn, vocab=vocab, experts=experts, top_k=top_k, tp=tp, dp=dp, pp=pp, vp=vp,
                           schedule=schedule, cp=cp, ep=ep, micro_batch=micro_batch, global_batch=global_batch,
                           seq_len=seq_len, sequence_parallel=sequence_parallel, recompute=recompute, zero=zero,
                           dp_replicate=dp_replicate, precision=precision,
                           world=int(os.environ.get("WORLD_SIZE", "1")), cuda=cuda, gpu=gpu, gpus=gpus,
                           fabric=fabric, compile=compile, steps=steps, lr=lr, warmup=warmup,
                           weight_decay=weight_decay, clip=clip, seed=seed, data=data, tokenizer=tokenizer,
                           text_key=text_key, checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                           keep=keep, resume=resume, metrics=metrics, log_every=log_every, device=device,
                           json=json_out, hardware=hardware, fp8_recipe=fp8_recipe)
        from .train import run

        run(cfg)
    except UserError:
        if rank != "0":        # under torchrun every rank finds the same error: rank 0 alone says it
            import time

            time.sleep(2.0)    # torchrun stops the other workers when one exits: let rank 0 print first
            raise SystemExit(2) from None
        raise
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("train")(train)
