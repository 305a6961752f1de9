"""``megacluster train``: argument parsing only. PyTorch is imported when the command runs, so that the rest of
megacluster works without it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError

INSTALL_HINT = "megacluster train needs PyTorch: pip install 'megacluster[train]'"


def build_config(*, plan: Optional[Path], model: Optional[str], layers: Optional[int], d_model: Optional[int],
                 heads: Optional[int], kv_heads: Optional[int], ffn: Optional[int], vocab: Optional[int],
                 experts: Optional[int], top_k: Optional[int], tp: Optional[int], dp: Optional[int],
                 pp: Optional[int], cp: Optional[int], ep: Optional[int], micro_batch: Optional[int],
                 global_batch: Optional[int], seq_len: Optional[int], sequence_parallel: Optional[bool],
                 recompute: Optional[str], zero: Optional[int], precision: Optional[str], world: int,
                 fp8_recipe: Optional[str] = None,
                 cuda: bool, gpu: Optional[str], gpus: Optional[int], fabric: Optional[str], **rest):
    """A :class:`TrainConfig` from the plan (if any) with the flags given on top (no torch needed)."""
    from pydantic import ValidationError

    from .. import catalog
    from ..specs import Layout
    from .config import TINY, TrainConfig
    from .model_spec import scale_model
    from .plan import read_plan

    rp = read_plan(plan) if plan else None
    spec = catalog.model(model) if model else (rp.model if rp else TINY)
    spec = scale_model(spec, layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn=ffn, vocab=vocab,
                       experts=experts, top_k=top_k)
    lay = dict(rp.layout) if rp else {}
    given = {"tp": tp, "dp": dp, "pp": pp, "cp": cp, "ep": ep, "micro_batch": micro_batch,
             "global_batch": global_batch, "seq_len": seq_len, "sequence_parallel": sequence_parallel,
             "recompute": recompute, "zero": zero}
    lay.update({k: v for k, v in given.items() if v is not None})
    plan_precision = lay.pop("precision", None)
    if precision:
        prec = precision
    elif cuda:
        prec = plan_precision or "bf16"
    else:
        prec = "fp8" if plan_precision == "fp8" else "fp32"  # an fp8 plan on CPU: bf16, said in one line (fp8.py)
    if prec not in ("bf16", "fp16", "fp32", "fp8"):
        raise UserError(f"precision {prec}: the runtime trains in bf16, fp16, fp32 or fp8; pass --precision bf16")
    from .fp8 import check_recipe
    if fp8_recipe and prec != "fp8":
        raise UserError(f"--fp8-recipe {fp8_recipe} applies to fp8 training; add --precision fp8 or drop the flag")
    recipe = check_recipe(fp8_recipe or (rp.stack.fp8_recipe if rp and rp.stack else None)) if prec == "fp8" \
        else None
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
    return TrainConfig(model=spec, layout=layout, precision=prec, gpu=gpu or (rp.gpu if rp and cuda else None),
                       gpus=gpus, fabric=fabric or (rp.fabric if rp else None), stack=rp.stack if rp else None,
                       fp8_recipe=recipe, **rest)


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
    pp: Optional[int] = typer.Option(None, help="pipeline stages (1F1B; with dp, not with tp)"),
    cp: Optional[int] = typer.Option(None, help="context-parallel degree (ring attention over cp ranks)"),
    ep: Optional[int] = typer.Option(None, help="expert-parallel degree (experts split over ep of the dp*cp ranks)"),
    micro_batch: Optional[int] = typer.Option(None, help="sequences per micro-batch per dp rank (default 8)"),
    global_batch: Optional[int] = typer.Option(None, help="sequences per step (default dp x micro-batch)"),
    seq_len: Optional[int] = typer.Option(None, help="tokens per sequence"),
    sequence_parallel: Optional[bool] = typer.Option(None, "--sequence-parallel/--no-sequence-parallel",
                                                     help="shard norms/residuals along the sequence (tp > 1)"),
    recompute: Optional[str] = typer.Option(None, help="activation checkpointing: none, selective or full"),
    zero: Optional[int] = typer.Option(None, help="3: reshard weights after forward (FSDP); 0-2: keep them"),
    precision: Optional[str] = typer.Option(None, help="bf16, fp16, fp32 or fp8 (default: bf16 on GPU, fp32 on CPU)"),
    fp8_recipe: Optional[str] = typer.Option(None, help="fp8 scaling (torchao): tensorwise or rowwise "
                                                        "(default: the plan's, else tensorwise)"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile each transformer block"),
    steps: int = typer.Option(100, help="optimizer steps in total (a resumed run stops at the same step)"),
    lr: float = typer.Option(3e-3, help="peak learning rate (AdamW)"),
    warmup: int = typer.Option(10, help="linear warm-up steps"),
    weight_decay: float = typer.Option(0.1),
    clip: float = typer.Option(1.0, help="gradient-norm clip (0: off)"),
    seed: int = typer.Option(0),
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
) -> None:
    """Train a Llama-architecture model with a plan's layout (launch with torchrun for several processes)
    and compare the measured throughput with megacluster's prediction."""
    import os

    for name, val in (("steps", steps), ("log-every", log_every), ("keep", keep)):
        if val <= 0:
            raise UserError(f"--{name} must be positive, got {val}")
    if lr <= 0 or warmup < 0 or checkpoint_every < 0:
        raise UserError("--lr must be positive and --warmup, --checkpoint-every non-negative")
    if resume and resume != "auto" and not Path(resume).exists():
        raise UserError(f"--resume {resume}: no such checkpoint directory (give a step_* directory or auto)")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    cfg = build_config(plan=plan, model=model, layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads,
                       ffn=ffn, vocab=vocab, experts=experts, top_k=top_k, tp=tp, dp=dp, pp=pp, cp=cp, ep=ep,
                       micro_batch=micro_batch, global_batch=global_batch, seq_len=seq_len,
                       sequence_parallel=sequence_parallel, recompute=recompute, zero=zero, precision=precision,
                       fp8_recipe=fp8_recipe,
                       world=int(os.environ.get("WORLD_SIZE", "1")), cuda=cuda, gpu=gpu, gpus=gpus, fabric=fabric,
                       compile=compile, steps=steps, lr=lr, warmup=warmup, weight_decay=weight_decay, clip=clip,
                       seed=seed, data=data, tokenizer=tokenizer, text_key=text_key, checkpoint_dir=checkpoint_dir,
                       checkpoint_every=checkpoint_every, keep=keep, resume=resume, metrics=metrics,
                       log_every=log_every, device=device, json=json_out)
    from .train import run

    run(cfg)
    sys.stdout.flush()


def register(app: typer.Typer) -> None:
    app.command("train")(train)
