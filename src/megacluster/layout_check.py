"""Checks that a layout can run a model on a cluster; each failure is one line saying what to change."""

from __future__ import annotations

from .errors import UserError
from .specs import ClusterSpec, Layout, ModelSpec


def layout_problems(model: ModelSpec, cluster: ClusterSpec, layout: Layout) -> list[str]:
    """Every reason the layout cannot run (empty when it can)."""
    L, m = layout, model
    out: list[str] = []
    if L.n_gpus != cluster.n_gpus:
        out.append(f"degrees tp*pp*dp*cp = {L.tp}*{L.pp}*{L.dp}*{L.cp} = {L.n_gpus} but the cluster has "
                   f"{cluster.n_gpus} GPUs; change --dp to {cluster.n_gpus // max(1, L.tp * L.pp * L.cp)}"
                   if cluster.n_gpus % (L.tp * L.pp * L.cp) == 0 else
                   f"degrees tp*pp*dp*cp = {L.n_gpus} do not divide into the cluster's {cluster.n_gpus} GPUs")
    if m.n_heads % L.tp:
        out.append(f"{m.n_heads} attention heads are not divisible by tp={L.tp}; use a tp that divides "
                   f"{m.n_heads}")
    elif L.tp > m.kv_heads and L.tp % m.kv_heads:
        out.append(f"{m.kv_heads} key/value heads cannot be split or replicated over tp={L.tp}")
    if L.pp > m.n_layers:
        out.append(f"pp={L.pp} is more than the model's {m.n_layers} layers")
    if L.vp > 1 and L.pp == 1:
        out.append("virtual pipeline stages (--vp > 1) need pipeline parallelism (--pp > 1)")
    if L.vp > 1 and L.pp * L.vp > m.n_layers:
        out.append(f"pp*vp = {L.pp * L.vp} model chunks is more than the {m.n_layers} layers")
    if L.global_batch % (L.dp * L.micro_batch):
        out.append(f"global batch {L.global_batch} is not divisible by dp*micro_batch = "
                   f"{L.dp}*{L.micro_batch}; choose a global batch that is a multiple of {L.dp * L.micro_batch}")
    elif L.vp > 1 and L.n_microbatches % L.pp:
        out.append(f"interleaved schedule needs the {L.n_microbatches} micro-batches to be a multiple of "
                   f"pp={L.pp}; pass --vp 1, or a --global-batch that is a multiple of dp*micro_batch*pp = "
                   f"{L.dp * L.micro_batch * L.pp}")
    if L.precision == "bf16" and cluster.gpu.half_precision != "bf16":
        out.append(f"{cluster.gpu.id} has no bf16 arithmetic; use --precision {cluster.gpu.half_precision}")
    if L.precision == "fp8" and "fp8" not in cluster.gpu.peak_tflops:
        out.append(f"{cluster.gpu.id} has no fp8 tensor cores; use --precision {cluster.gpu.half_precision}")
    if L.seq_len % L.cp:
        out.append(f"sequence length {L.seq_len} is not divisible by cp={L.cp}")
    out += replicate_problems(L)
    if L.ep > 1:
        if not m.moe:
            out.append(f"ep={L.ep} but {m.name} is a dense model; use --ep 1")
        elif m.moe.n_experts % L.ep:
            out.append(f"{m.moe.n_experts} experts are not divisible by ep={L.ep}")
        elif (L.dp * L.cp) % L.ep:
            out.append(f"ep={L.ep} must divide dp*cp = {L.dp * L.cp} (experts are spread over data ranks)")
    return out


def replicate_problems(layout: Layout) -> list[str]:
    """The rules of ``dp_replicate`` (HSDP replicas of the sharded state), shared by the planner and the runtime."""
    L = layout
    if L.dp_replicate <= 1:
        return []
    if L.zero == 0:
        return [f"dp_replicate={L.dp_replicate} replicates sharded state, but zero 0 shards nothing; "
                "use --zero 1, 2 or 3, or --dp-replicate 1"]
    if L.dp % L.dp_replicate:
        return [f"dp_replicate={L.dp_replicate} must divide dp={L.dp} (each replica shards over "
                "dp/dp_replicate data ranks)"]
    if L.ep > 1 and (L.dp * L.cp // L.dp_replicate) % L.ep:
        return [f"ep={L.ep} must divide the shard group dp*cp/dp_replicate = "
                f"{L.dp * L.cp // L.dp_replicate}; use a smaller --dp-replicate"]
    return []


def validate_layout(model: ModelSpec, cluster: ClusterSpec, layout: Layout) -> None:
    """Raise UserError with the first problem, if any."""
    probs = layout_problems(model, cluster, layout)
    if probs:
        raise UserError(probs[0])
