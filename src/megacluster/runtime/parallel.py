"""Applying a layout with torch.distributed: process groups, tensor/sequence parallelism (DTensor),
activation checkpointing, torch.compile and FSDP2, in the order that composes (TP -> AC -> compile -> FSDP).

Supported: ``pp`` x ``dp`` x ``tp`` on one 3-D (pp, dp, tp) device mesh: pipeline stages through
``torch.distributed.pipelining`` (schedules in ``runtime/pipeline.py``), FSDP2 over ``dp`` and DTensor TP over ``tp``
inside each stage; with ``cp`` or ``ep`` > 1 a 4-D (pp, dp, cp, tp) mesh (context parallelism in
``runtime/context_parallel.py``, expert parallelism in ``runtime/moe.py``). ZeRO stages map onto FSDP2:
``zero 3`` reshards weights after forward (FSDP), ``zero 0..2`` keeps them gathered between forward and
backward (gradients and optimizer state still sharded, i.e. ZeRO-2 memory or less). With ``dp_replicate`` > 1
FSDP2 runs as HSDP on a 2-D (replicate, shard) mesh cut from the dp x cp ranks (``context_parallel.fsdp_mesh``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError
from ..specs import Layout, ModelSpec

SUPPORTED = ("supported: pp (1F1B, interleaved, zero-bubble or DualPipeV) x dp (FSDP2) x tp (DTensor, with or "
             "without sequence parallelism); cp (ring attention, without pp) and ep (all-to-all, over dp x cp); "
             "dp_replicate (HSDP replicas of the FSDP state)")


@dataclass
class Dist:
    """This process's place in the job."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    mesh: object | None = None  # DeviceMesh with dims ("pp", "dp", "tp") when world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Dist:
    """Join the job that ``torchrun`` started (env RANK/WORLD_SIZE), or a one-process job without it.

    ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``. Backend: NCCL on CUDA, gloo on CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch (use --device cpu)")
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r} (use auto, cpu or cuda)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    return Dist(rank=rank, world=world, local_rank=local, device=dev)


def check_layout(layout: Layout, spec: ModelSpec, world: int, schedule: str = "1f1b") -> None:
    """Refuse, with one line, a layout this runtime cannot run on ``world`` processes."""
    if layout.vp > 1 and layout.pp == 1:
        raise UserError(f"vp={layout.vp} stages per pipeline rank need pipeline parallelism; pass --pp 2 or more "
                        "(or --vp 1)")
    if layout.pp > 1:
        from .pipeline import schedule_problem

        if spec.moe or spec.tied_embeddings:
            raise UserError(f"pipeline parallelism (pp={layout.pp}) is not implemented for "
                            f"{'MoE models' if spec.moe else 'tied embeddings'}; {SUPPORTED}")
        if layout.global_batch % (layout.dp * layout.micro_batch) == 0:
            why = schedule_problem(schedule, layout.pp, layout.vp, layout.n_microbatches, spec.n_layers,
                                   layout.recompute)
            if why:
                raise UserError(why)
    from ..layout_check import replicate_problems  # HSDP (dp_replicate): the planner's rules

    replicas = replicate_problems(layout)
    if replicas:
        raise UserError(replicas[0])
    # context and expert parallelism (context_parallel.py, moe.py)
    from . import context_parallel, moe
    context_parallel.check_layout(layout, spec)
    moe.check_layout(layout, spec)
    if layout.n_gpus != world:
        names, vals = ("tp*pp*dp*cp", f"*{layout.cp}") if layout.cp > 1 else ("tp*pp*dp", "")
        raise UserError(f"the layout needs {names} = {layout.tp}*{layout.pp}*{layout.dp}{vals} = {layout.n_gpus} "
                        f"processes but {world} were launched (torchrun --nproc_per_node {layout.n_gpus} ...)")
    if layout.tp > 1:
        if spec.moe:
            raise UserError(f"tensor parallelism with MoE layers is not implemented (tp={layout.tp}); "
                            "run MoE models with dp only")
        for what, n in (("n_heads", spec.n_heads), ("n_kv_heads", spec.kv_heads),
                        ("ffn_hidden", spec.ffn_hidden)):
            if n % layout.tp:
                raise UserError(f"tp={layout.tp} does not divide the model's {what} ({n})")
        if layout.sequence_parallel and layout.seq_len % layout.tp:
            raise UserError(f"sequence parallelism needs seq_len ({layout.seq_len}) divisible by tp={layout.tp}")
    if layout.global_batch % (layout.dp * layout.micro_batch):
        raise UserError(f"global batch {layout.global_batch} is not a multiple of dp*micro_batch = "
                        f"{layout.dp}*{layout.micro_batch}")


def make_mesh(d: Dist, layout: Layout):
    """The 3-D (pp, dp, tp) device mesh of the job, or None for one process."""
    if d.world == 1:
        return None
    if layout.cp > 1 or layout.ep > 1 or layout.dp_replicate > 1:
        # (pp, dp, cp, tp) with dp x cp flattened for FSDP, cut into (replica, shard) for HSDP (context_parallel.py)
        from .context_parallel import make_mesh as make_cp_mesh
        return make_cp_mesh(d, layout)
    from torch.distributed.device_mesh import init_device_mesh

    d.mesh = init_device_mesh(d.device.type, (layout.pp, layout.dp, layout.tp), mesh_dim_names=("pp", "dp", "tp"))
    return d.mesh


def apply_tp(model: nn.Module, tp_mesh, sequence_parallel: bool) -> None:
    """Megatron-style tensor parallelism: wq/wk/wv/w1/w3 column-wise, wo/w2 row-wise; with sequence
    parallelism the norms and the residual stream are sharded along the sequence between the blocks."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                                   SequenceParallel, parallelize_module)

    sp = sequence_parallel
    seq = Shard(1) if sp else Replicate()
    top = {"tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=seq),
           "output": ColwiseParallel(input_layouts=seq, output_layouts=Replicate(), use_local_output=True)}
    if sp:
        top["norm"] = SequenceParallel()
    if model.spec.tied_embeddings:
        raise UserError("tensor parallelism with tied embeddings is not implemented; use tp=1 for this model")
    top = {k: v for k, v in top.items() if getattr(model, k) is not None}   # a pipeline stage lacks some
    if top:
        parallelize_module(model, tp_mesh, top)
    for block in model.layers.values():
        plan = {
            "attention": PrepareModuleInput(input_layouts=(seq, None), desired_input_layouts=(Replicate(), None)),
            "attention.wq": ColwiseParallel(), "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=seq),
            "feed_forward": PrepareModuleInput(input_layouts=(seq,), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(), "feed_forward.w2": RowwiseParallel(output_layouts=seq),
        }
        if block.feed_forward.w3 is not None:
            plan["feed_forward.w3"] = ColwiseParallel()
        if sp:
            plan["attention_norm"] = SequenceParallel()
            plan["ffn_norm"] = SequenceParallel()
        parallelize_module(block, tp_mesh, plan)


def _selective_policy():
    """The per-op policy of the torchtitan stack that megacluster's step model assumes for "selective"
    (stacks.yaml: selective_policy every_other_matmul): keep attention outputs and the 1st, 3rd, 5th...
    matrix multiply of each block, recompute the other matmuls and every element-wise op (norms, SiLU, RoPE).

    Counting restarts for every block call, and the forward and the recompute keep separate counts so that
    both make the same decision for the same matmul."""
    from torch.utils.checkpoint import CheckpointPolicy

    aten = torch.ops.aten
    matmuls = {aten.mm.default, aten.addmm.default}
    attention = {aten._scaled_dot_product_efficient_attention.default,
                 aten._scaled_dot_product_flash_attention.default,
                 aten._scaled_dot_product_flash_attention_for_cpu.default}
    seen = {"forward": 0, "recompute": 0}

    def policy(ctx, op, *args, **kwargs):
        if op in attention:
            return CheckpointPolicy.MUST_SAVE
        if op in matmuls:
            phase = "recompute" if ctx.is_recompute else "forward"
            seen[phase] += 1
            if seen[phase] % 2 == 1:
                return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return policy


def _selective_context():
    from torch.utils.checkpoint import create_selective_checkpoint_contexts

    return create_selective_checkpoint_contexts(_selective_policy())


def apply_ac(model: nn.Module, mode: str) -> None:
    """Activation checkpointing per block: ``full`` recomputes the whole block in backward; ``selective``
    keeps attention outputs and every other matmul output and recomputes the rest (``_selective_policy``)."""
    if mode == "none":
        return
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    kwargs: dict = {"preserve_rng_state": False}
    if mode == "selective":
        kwargs["context_fn"] = _selective_context
    elif mode != "full":
        raise UserError(f"unknown recompute mode {mode!r} (none, selective or full)")
    for name, block in list(model.layers.items()):
        model.layers[name] = checkpoint_wrapper(block, **kwargs)


def apply_compile(model: nn.Module, backend: str = "inductor") -> None:
    """torch.compile each transformer block (the blocks repeat, so one graph is reused)."""
    for name, block in list(model.layers.items()):
        model.layers[name] = torch.compile(block, backend=backend)


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype of the layers that run in ``precision`` (fp8 runs everything but its matmuls in bf16, fp8.py)."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "fp8": torch.bfloat16}[precision]


def apply_fsdp(model: nn.Module, dp_mesh, precision: str, zero: int) -> None:
    """FSDP2 ``fully_shard`` per block, then the root; parameters in ``precision`` for compute, gradients
    reduced in fp32. A 2-D ``dp_mesh`` (replicate, shard) makes it HSDP: sharded over the inner dimension,
    gradient shards all-reduced over the outer one."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=precision_dtype(precision), reduce_dtype=torch.float32)
    reshard = zero >= 3
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(model, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)


def parallelize(model: nn.Module, d: Dist, layout: Layout, precision: str, compile: bool,
                backend: str = "inductor") -> nn.Module:
    """Apply TP, activation checkpointing, compile and FSDP to ``model`` (already on ``d.device``)."""
    mesh = d.mesh
    if mesh is not None and layout.ep > 1:  # experts sharded over ep ranks, all-to-all dispatch (moe.py)
        from .moe import apply_ep
        apply_ep(model, mesh, layout)
    if mesh is not None and layout.tp > 1:
        apply_tp(model, mesh["tp"], layout.sequence_parallel)
    apply_ac(model, layout.recompute)
    if compile:
        apply_compile(model, backend)
    if mesh is not None and layout.dp * layout.cp > 1:
        from .context_parallel import fsdp_mesh  # dp x cp ranks share FSDP (context_parallel.py)
        from .moe import apply_expert_fsdp
        apply_expert_fsdp(model, mesh, layout, precision)  # experts over the ranks ep leaves (moe.py)
        apply_fsdp(model, fsdp_mesh(mesh, layout.dp_replicate), precision, layout.zero)  # 2-D mesh: HSDP
    return model


def uses_fsdp(d: Dist, layout: Layout) -> bool:
    return d.mesh is not None and layout.dp * layout.cp > 1


def pipeline_schedule(parts: list, stage_ids: list[int], d: Dist, layout: Layout, schedule: str, loss_fn):
    """The torch schedule over this rank's pipeline stages (``parts[i]`` is global stage ``stage_ids[i]`` of
    ``pp * vp``), as ``runtime/pipeline.py`` maps the plan's schedule name."""
    from torch.distributed.pipelining import PipelineStage

    from .pipeline import build_schedule

    pp = d.mesh["pp"]
    n_stages = layout.pp * layout.vp
    stages = [PipelineStage(m, sid, n_stages, d.device, group=pp.get_group()) for m, sid in zip(parts, stage_ids)]
    return build_schedule(schedule, stages, layout.global_batch // (layout.dp * layout.micro_batch), loss_fn)


def clip_grad_norm(params, max_norm: float, pp_group=None) -> float:
    """Clip gradients to a global L2 norm and return the norm before clipping.

    Works for any mix of plain tensors and DTensors on different meshes (FSDP-only norm weights beside
    FSDP x TP matrices): the norm is computed per (mesh, placements) group, made full, and combined.
    """
    from torch.distributed.tensor import DTensor

    groups: dict = {}
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        key = (id(g.device_mesh), tuple(g.placements)) if isinstance(g, DTensor) else ("local", g.device)
        groups.setdefault(key, []).append(g)
    sq = []
    for grads in groups.values():
        n = torch.nn.utils.get_total_norm(grads, 2.0)
        if isinstance(n, DTensor):
            n = n.full_tensor()
        sq.append(n.float().pow(2))
    if not sq:
        sq = [torch.zeros(())]
    total = torch.stack([s.to(sq[0].device) for s in sq]).sum()
    if pp_group is not None:  # each pipeline stage holds different parameters
        dist.all_reduce(total, group=pp_group)
    total = total.sqrt()
    if max_norm > 0:
        for grads in groups.values():
            torch.nn.utils.clip_grads_with_norm_(grads, max_norm, total)
    return float(total)
