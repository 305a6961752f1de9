"""The step model: one training step of a decoder transformer on a cluster, for a parallel layout.

``estimate_arrays`` evaluates many layouts at once (numpy arrays of degrees, broadcast together);
``estimate`` wraps it for one :class:`Layout` and returns a :class:`StepEstimate`.

Per GPU and per micro-batch, the slowest pipeline stage runs ``L/pp`` layers (plus the output layer on the
last stage). Each layer costs GEMM time (by op class, with the GPU's shape-dependent efficiency), attention
time (flash or unfused), memory-bound time (norms, activations, residuals, fp8 casts), recompute, and the
exposed part of its tensor-, context- and expert-parallel communication. The step is then

    step = (n_microbatches + bubble) x t_microbatch + exposed pipeline p2p + exposed DP communication
           + optimizer + slowest-rank wait + fixed overhead

with the bubble from :mod:`physics.pipeline` and the communication from :mod:`physics.comm`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel

from . import catalog
from .physics import comm, compute, straggler
from .physics.flops import (attention_core_flops, attn_dims, layer_matmul_flops, logits_flops,
                            model_flops_per_token)
from .physics.memory import GIB, activation_bytes_per_token_layer
from .physics.pipeline import bubble_fraction
from .specs import ClusterSpec, Layout, ModelSpec, StackSpec

LAYOUT_KEYS = ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch", "seq_len",
               "sequence_parallel", "recompute", "zero", "fp8")
RECOMPUTE = {"none": 0, "selective": 1, "full": 2}
# ring-attention bookkeeping bytes a stack may give (stacks.yaml cp_ring_bytes): per call and per ring step,
# forward and backward, per attention-output element (q) and per K element (kv)
CP_RING_KEYS = tuple(f"{p}{s}_{e}" for p in ("fwd", "bwd") for s in ("", "_step") for e in ("q", "kv"))
# fp32 softmax cross-entropy over the logits, HBM bytes per logit element (forward + backward), counted
# from the eager ops of PyTorch's F.cross_entropy on upcast logits: cast bf16->fp32 (2 read + 4 write),
# log-softmax (max/sum pass 4 + 4, write 4), dense gradient (4), softmax backward (4 + 4 read, 4 write),
# cast back to bf16 (4 + 2): about 40. A stack whose loss code differs sets loss_traffic_bytes.
LOSS_BYTES_PER_LOGIT = 40.0


# GPU generations in time order (AMD CDNA beside its NVIDIA contemporaries), for stacks that have no
# variant for a generation
GENERATION_ORDER = {"volta": 0, "ampere": 1, "cdna2": 1, "hopper": 2, "cdna3": 2, "blackwell": 3, "cdna4": 3}


def _variant(variants: dict[str, dict], generation: str) -> dict:
    """A stack's constants for a GPU generation: its own variant, else ``default``, else the variant of the
    nearest generation in time (the older one on a tie): Megatron on Volta runs the Ampere-era code (no flash
    attention), on Blackwell the Hopper-era Megatron-Core."""
    if generation in variants:
        return variants[generation]
    if "default" in variants:
        return variants["default"]
    rank = GENERATION_ORDER.get(generation, max(GENERATION_ORDER.values()))
    known = [g for g in variants if g in GENERATION_ORDER] or list(variants)
    return variants[min(known, key=lambda g: (abs(GENERATION_ORDER.get(g, rank) - rank),
                                              GENERATION_ORDER.get(g, rank) - rank))]


def stack_constants(stack: StackSpec, generation: str) -> dict[str, Any]:
    """The efficiency constants of a software stack on a GPU generation, with its flags applied."""
    entry = catalog.stack_constants(stack.framework)
    c = dict(_variant(entry["by_generation"], generation))
    c["source"] = entry.get("source", "")
    if stack.schedule is not None:                # the run's own pipeline schedule
        c["schedule"] = stack.schedule
    if stack.attention is not None:               # the run's own attention kernel (e.g. --use-flash-attn)
        c["attention"] = stack.attention
    if stack.async_tp and "async_tp_overlap" in c:
        c["tp_overlap"] = c["async_tp_overlap"]
    elif stack.async_tp:
        c["tp_overlap"] = "chunked"
    elif stack.tp_overlap is not None:            # the run's own TP overlap (e.g. none: userbuffers never set up)
        c["tp_overlap"] = stack.tp_overlap
    if stack.dp_bucket_params is not None:        # the run's own DDP bucket size
        c["dp_bucket_params"] = {"min": float(stack.dp_bucket_params), "per_dp_rank": 0.0}
    # which passes the chunked overlap covers: both (Transformer Engine userbuffers) or forward only
    # (PyTorch async TP: the compiler rewrites forward all-gather->matmul / matmul->reduce-scatter pairs)
    scope = c.get("async_tp_scope", "both") if stack.async_tp else c.get("tp_overlap_scope", "both")
    if scope not in ("both", "forward"):
        raise ValueError(f"stack constant async_tp_scope / tp_overlap_scope must be both or forward, "
                         f"not {scope!r}")
    c["tp_overlap_scope"] = scope
    c["elementwise"] = c["compiled_elementwise_bytes"] if stack.compile else c["elementwise_bytes"]
    if stack.grad_reduce_fp32 is not None:        # the run's own gradient precision (Megatron-LM's flag)
        c["grad_bytes"] = c["grad_reduce_bytes"] = 4 if stack.grad_reduce_fp32 else 2
    kernel = c.get("attention_kernel_efficiency", 1.0)      # a number, or a mapping by GPU generation
    c["attention_kernel_efficiency"] = float(kernel.get(generation, kernel.get("default", 1.0))
                                             if isinstance(kernel, dict) else kernel)
    ring = c.get("cp_ring_bytes") or {}
    unknown = sorted(set(ring) - set(CP_RING_KEYS))
    if unknown:
        raise ValueError(f"stack constant cp_ring_bytes has unknown keys {unknown}; use {', '.join(CP_RING_KEYS)}")
    c["cp_ring_bytes"] = {k: float(ring.get(k, 0.0)) for k in CP_RING_KEYS}
    casts = c.get("fp8_cast_bytes") or {}
    c["fp8_cast"] = casts.get(stack.fp8_recipe or "default", casts.get("default", 1.5))
    c["loss_traffic"] = float(c.get("loss_traffic_bytes", LOSS_BYTES_PER_LOGIT))
    # selective recompute reruns the attention core: always for unfused attention (Korthikanti et al. 2022,
    # the s x s scores are what it drops); with flash kernels only where the stack checkpoints them anyway
    c["selective_core"] = bool(c.get("selective_recomputes_core", c["attention"] != "flash"))
    gemm8 = c.get("fp8_gemm_factor") or {}
    c["fp8_gemm"] = gemm8.get(stack.fp8_recipe or "default", gemm8.get("default", 1.0))
    return c


def _fsdp_keeps(c: dict[str, Any], key: str, pp):
    """Whether a ZeRO-3 stack keeps a stage's weights or gradients unsharded across micro-batches:
    "never", "with_pp" (only when pipelining, as torchtitan does) or "always"."""
    mode = c.get(key, "never")
    if mode not in ("never", "with_pp", "always"):
        raise ValueError(f"stack constant {key} must be never, with_pp or always, not {mode!r}")
    return np.asarray(pp > 1) if mode == "with_pp" else np.full(np.shape(pp), mode == "always")


def _dropout(m: ModelSpec) -> bool:
    """GPT-style (non-gated, GELU) models were trained with dropout 0.1; Llama-style models without."""
    return m.mlp == "gelu"


def estimate_arrays(model: ModelSpec, cluster: ClusterSpec, stack: StackSpec,
                    L: dict[str, Any]) -> dict[str, np.ndarray]:
    """Evaluate layouts given as arrays (keys ``LAYOUT_KEYS``; ``recompute`` as 0/1/2, ``fp8`` as bool).

    Returns arrays of seconds, bytes and rates; see ``estimate`` for the meaning of each."""
    g, node, m = cluster.gpu, cluster.node, model
    c = stack_constants(stack, g.generation)
    A = {k: np.asarray(L[k]) for k in LAYOUT_KEYS}
    tp, pp, dp, cp, ep, vp = (A[k].astype(float) for k in ("tp", "pp", "dp", "cp", "ep", "vp"))
    mb, gb, s = A["micro_batch"].astype(float), A["global_batch"].astype(float), A["seq_len"].astype(float)
    # a stack whose pipeline schedule always interleaves model chunks where the layout leaves vp at 1: at
    # least min_virtual_stages per rank, or chunks of layers_per_chunk layers with the embedding and the
    # output layer counted as one layer each (Meta's, Llama 3 paper section 3.3.2). Interleaving shrinks
    # the bubble less when there are fewer micro-batches than pipeline ranks (physics/pipeline.py).
    lpc = c.get("layers_per_chunk")
    stack_vp = (np.ceil((m.n_layers + 2) / (pp * lpc)) if lpc
                else np.full_like(pp, c.get("min_virtual_stages", 1)))
    vp = np.where((vp == 1) & (pp > 1), np.maximum(stack_vp, 1.0), vp)
    stack_chunks = (pp > 1) & bool(lpc) & (vp == stack_vp)           # the stack's own layer-sized chunks
    sp = A["sequence_parallel"].astype(bool) & (tp > 1)
    rc = A["recompute"].astype(int)
    fp8 = A["fp8"].astype(bool)
    zero = A["zero"].astype(int)
    # replicas of the sharded state (HSDP / MiCS / distributed-optimizer instances; 1 when not given)
    rep = np.asarray(L.get("dp_replicate", 1)).astype(float)
    gpn = float(node.nvlink_domain)      # GPUs that reach each other over NVLink (the node, or an NVL72 rack)
    h, V = m.d_model, m.vocab
    qd, vd = attn_dims(m)
    n_layers = float(m.n_layers)
    # the pipeline splits the model's layers and its multi-token-prediction modules' layers alike (stacks place
    # them in the layout: Megatron's pp_layout "...|tmL" gives the stage with the MTP layer and the loss fewer
    # layers; DeepSeek-V3's DualPipe puts them with the embedding's rank)
    mtp = float(m.mtp_layers)
    layers_stage = (n_layers + mtp) / pp
    # layers per pipeline rank: an even split, or, where the stack cuts the model into layer-sized chunks with
    # the embedding and the output layer in a layer's slot (Meta's), ceil((L + 2) / pp) on a middle rank and
    # one fewer on the first and last ranks (their embedding / output layer take the slot)
    slots = np.ceil((n_layers + mtp + 2.0) / pp)
    layers_end = np.where(stack_chunks, slots - 1.0, layers_stage)
    layers_mid = np.where(stack_chunks & (pp > 2), slots, layers_end)     # two ranks: both are ends

    T = mb * s / cp                      # tokens per GPU per micro-batch
    n_mb = gb / (dp * mb)                # micro-batches per step per pipeline
    flash = c["attention"] == "flash"
    ew = c["elementwise"]

    # ------------------------------------------------------------------ compute per layer
    # linear layers as (forward, backward) seconds per micro-batch; fp8 GEMM kernels of a stack's scaling
    # recipe may run below the chip's fp8 rate (slow8)
    slow8 = np.where(fp8, 1.0 / c["fp8_gemm"], 1.0)

    def lin(tokens, d_in, d_out, count=1.0, f8=fp8):
        f, b = compute.linear_times(g, tokens, d_in, d_out, f8, count)
        k = np.where(f8, slow8, 1.0)      # the router (f8 False) runs in 16 bits, unslowed
        return f * k, b * k

    qkv_out = np.maximum(m.attn_params / h - vd, 1.0) / tp      # Q, K, V (MLA: its down/up projections)
    f_qkv, b_qkv = lin(T, h, qkv_out)
    f_o, b_o = lin(T, vd / tp, h)
    n_mats = 3.0 if m.gated else 2.0

    def mlp(tokens, width, count=1.0):
        fu, bu = lin(tokens, h, width, (n_mats - 1.0) * count)
        fd, bd = lin(tokens, width, h, count)
        return fu, fd, bu + bd

    f_up, f_dn, b_mlp = mlp(T, m.ffn_hidden / tp)
    if m.moe:
        e = m.moe
        ffrac = m.n_moe_layers / n_layers
        local_experts = e.n_experts / ep
        # expert-parallel: experts whole, tokens of this rank's sequence shard routed to them;
        # otherwise every expert is tensor-split like a dense MLP (grouped GEMM: tiles share waves)
        tok_per_expert = np.where(ep > 1, T / tp * e.top_k * ep / e.n_experts, T * e.top_k / e.n_experts)
        width = np.where(ep > 1, e.expert_ffn_hidden, e.expert_ffn_hidden / tp)
        xu, xd, xb = mlp(tok_per_expert, width, local_experts)
        shared_w = (e.shared_ffn_hidden or e.expert_ffn_hidden) * e.n_shared_experts
        su, sd, sb = mlp(T, shared_w / tp) if shared_w else (0.0, 0.0, 0.0)
        t_shared = su + sd + sb          # the shared experts' forward and backward, per MoE layer
        rf, rb = lin(T, h, e.n_experts, f8=False)
        f_up = (1 - ffrac) * f_up + ffrac * (xu + su + rf)
        f_dn = (1 - ffrac) * f_dn + ffrac * (xd + sd)
        b_mlp = (1 - ffrac) * b_mlp + ffrac * (xb + sb + rb)
    t_attn_proj_f, t_attn_proj_b = f_qkv + f_o, b_qkv + b_o
    t_mlp_f, t_mlp_b = f_up + f_dn, b_mlp

    heads_local = m.n_heads / tp
    # elements of this GPU's attention output, and of its K (V counted in: the mean of the K and V widths) at
    # the heads context parallelism carries: all query heads where the stack repeats K/V before attention
    kv_heads_cp = float(m.n_heads) if c.get("cp_kv_repeated", False) else float(m.kv_heads)
    q_el = T * vd / tp
    kv_el = T * kv_heads_cp * (qd / m.n_heads + m.hd) / 2.0 / tp
    if flash:
        attn_fwd_flops = T * attention_core_flops(m, s, causal=True) / tp
        kernel = c["attention_kernel_efficiency"]
        t_core_f = compute.attention_time(g, attn_fwd_flops, s / cp) / kernel
        t_core_b = 2.5 * compute.attention_time(g, attn_fwd_flops, s / cp, backward=True) / kernel
        # ring attention (cp > 1): the stack's own tensor ops around the kernels (output merges, casts,
        # gradient accumulation, send buffers), once per call and once per ring step after the first
        rb, steps = c["cp_ring_bytes"], np.maximum(cp - 1.0, 0.0)

        def ring(pass_):
            return compute.memory_time(g, q_el * (rb[f"{pass_}_q"] + steps * rb[f"{pass_}_step_q"])
                                       + kv_el * (rb[f"{pass_}_kv"] + steps * rb[f"{pass_}_step_kv"]))
        t_core_f = t_core_f + np.where(cp > 1, ring("fwd"), 0.0)
        t_core_b = t_core_b + np.where(cp > 1, ring("bwd"), 0.0)
    else:   # batched GEMMs over the full s x s scores, then fused scale-mask-softmax (+ dropout)
        hd_qk = qd / m.n_heads
        t_gemm = compute.gemm_time(g, s, s, hd_qk, False, count=2.0 * mb / cp * heads_local)
        score_elems = mb / cp * heads_local * s * s
        per_elem_f = 4.0 + (5.0 if _dropout(m) else 0.0)        # softmax r/w (+ dropout r/w and mask)
        t_soft_f = compute.memory_time(g, score_elems * per_elem_f)
        t_core_f = t_gemm + t_soft_f
        t_core_b = 2 * t_gemm + 2 * t_soft_f

    # memory-bound ops: bytes per token (forward); backward moves about twice as much
    drop = 10.0 * h if _dropout(m) else 0.0
    f_eff = m.ffn_hidden if not m.moe else (
        (m.n_dense_ffn_layers * m.ffn_hidden + m.n_moe_layers * (m.moe.top_k * m.moe.expert_ffn_hidden
         + m.moe.n_shared_experts * (m.moe.shared_ffn_hidden or m.moe.expert_ffn_hidden))) / n_layers)
    act_bytes = (6.0 if m.gated else 4.0) * f_eff
    rope_bytes = 0.0 if m.mlp == "gelu" else 4.0 * (qd + m.kv_heads * (qd / m.n_heads))
    outer = 8.0 * h + 12.0 * h + drop                          # 2 norms, 2 residual adds, dropouts
    inner = act_bytes + rope_bytes
    outer_div = np.where(sp, tp, 1.0)
    elem_f = ew * T * (outer / outer_div + inner / tp)
    # fp8: each GEMM operand is scaled and cast: activations (T x in) and weights of this GPU. Weights kept in fp8
    # (StackSpec.fp8_params) are not cast: the optimizer step writes them, and their transposes are made once
    # per step, 1/n_mb of it per micro-batch
    w_casts = np.where(bool(stack.fp8_params), 1.0 / np.maximum(gb / (dp * mb), 1.0), 1.0)
    fp8_elems = T * (2.0 * h + m.ffn_hidden * (2 if m.gated else 1)) / tp * 2 + (
        m.attn_params + m.ffn_params(m.ffn_hidden)) / tp * w_casts
    elem_f = elem_f + np.where(fp8, c["fp8_cast"] * fp8_elems, 0.0)
    t_elem_f = compute.memory_time(g, elem_f)
    # eager ops the host issues one by one where the device does not run ahead of it (a CPU; GPU entries have
    # op_overhead_us 0): the stack's op counts per layer (stacks.yaml eager_ops_*) x the device's time per op
    op_s = g.op_overhead_us * 1e-6
    t_ops_f = c.get("eager_ops_layer_fwd", 0.0) * op_s
    t_ops_b = c.get("eager_ops_layer_bwd", 0.0) * op_s

    t_gemm_f = t_attn_proj_f + t_mlp_f
    t_fwd = t_gemm_f + t_core_f + t_elem_f + t_ops_f
    t_bwd = t_attn_proj_b + t_mlp_b + t_core_b + 2.0 * t_elem_f + t_ops_b
    # recompute: full reruns the forward; selective reruns part of it
    sel_extra = c["selective_gemm_recompute"] * t_gemm_f + (t_elem_f if c["selective_gemm_recompute"] else 0.0)
    if c["selective_core"]:
        sel_extra = sel_extra + t_core_f
    t_recomp = np.where(rc == 2, t_fwd, np.where(rc == 1, sel_extra, 0.0))
    t_layer = t_fwd + t_bwd + t_recomp

    # output layer (last stage): logits GEMMs, then the fp32 softmax cross-entropy over the vocabulary
    f_log, b_log = compute.linear_times(g, T, h, V / tp)
    t_ops_out = c.get("eager_ops_model", 0.0) * op_s            # embedding, final norm, output layer, loss
    t_logits = f_log + b_log + compute.memory_time(g, T * V / tp * c["loss_traffic"]) + t_ops_out

    # ------------------------------------------------------------------ communication per layer
    act_msg = T * h * 2.0                                         # one token-block of activations, bytes
    tp_per_node = np.minimum(tp, gpn)
    t_tp_one = comm.allgather_time(cluster, act_msg, tp, tp_per_node, tp)
    # per layer: forward 2 all-reduces (with SP: 2 all-gathers + 2 reduce-scatters, the same bytes:
    # Korthikanti et al. 2022 section 4.2.2), backward the same again, full recompute repeats the forward.
    # Counted in all-gather units (an all-reduce moves twice an all-gather's bytes).
    # Selective recompute may rerun some of them too (stack constant selective_tp_units: torchtitan's per-op
    # policy saves reduce-scatter outputs but not all-gathers, so the two all-gathers of a layer rerun).
    n_tp = 8.0 + np.where(rc == 2, 4.0, np.where(rc == 1, c.get("selective_tp_units", 0.0), 0.0))
    t_tp = n_tp * t_tp_one
    if c["tp_overlap"] == "chunked":
        # collective matmul (TE userbuffers, PyTorch async TP): each collective is cut into tp chunks and
        # pipelined with the GEMM next to it: the all-gather before the QKV and MLP-in GEMMs, the
        # reduce-scatter after the output and MLP-out GEMMs (backward: the same GEMMs' data-gradient
        # halves). One chunk stays exposed, and so does whatever the neighbouring GEMM is too short to hide.
        site = 0.0
        for t_g in (f_qkv, f_o, f_up, f_dn):
            site = site + np.maximum(t_tp_one / tp, t_tp_one - t_g)
        if c["tp_overlap_scope"] == "forward":
            # forward and recomputed forward pipelined; the backward's 4 collectives stay exposed
            tp_exposed = site * (n_tp - 4.0) / 4.0 + 4.0 * t_tp_one
        else:
            tp_exposed = site * n_tp / 4.0
    else:
        tp_exposed = t_tp

    kv_bytes = 2.0 * kv_el * 2.0                                  # K and V, 16-bit
    cp_per_node = np.clip(gpn / tp, 1, cp)
    t_cp = 3.0 * comm.ring_allgather_time(kv_bytes * cp, cp, comm.group_bandwidth(
        cluster, cp, cp_per_node, tp * cp)[0])
    cp_exposed = np.where(cp > 1, np.maximum(0.0, t_cp - c["cp_overlap"] * (t_core_f + t_core_b)), 0.0)

    if m.moe:
        ep_per_node = np.clip(gpn / (tp * cp), 1, ep)
        disp = T / tp * m.moe.top_k * h * np.where(fp8, 1.5, 2.0)    # fp8 dispatch + bf16 combine averaged
        t_ep = 4.0 * comm.alltoall_time(cluster, disp, ep, ep_per_node, ep * tp * cp)
        # a stack may run the shared experts' GEMMs while the all-to-all is in flight (DeepSeek-V2): they hide
        # that much of what its ep_overlap leaves exposed
        behind = t_shared if c.get("ep_overlap_shared_experts", False) else 0.0
        ep_exposed = (m.n_moe_layers / n_layers) * np.maximum((1.0 - c["ep_overlap"]) * t_ep - behind, 0.0)
    else:
        ep_exposed = np.zeros_like(tp)

    # host work a stack's parallel wrappers add per layer and micro-batch where the host does not run ahead of
    # the device (a calibrated CPU: FSDP hooks and copies, DTensor redistributions; stack constants measured by
    # `megacluster calibrate` into a profile, 0 in the catalog)
    # DTensor TP: the DTensor ops a layer issues (counted, forward and backward; full recompute reruns the
    # forward's) x the host time of one (dtensor_op_us); profiles written before those were measured carry
    # one per-layer figure, tp_layer_overhead_s
    if "dtensor_op_us" in c:
        tp_host = c["dtensor_op_us"] * 1e-6 * (c.get("eager_ops_tp_layer_fwd", 0.0) * np.where(rc == 2, 2.0, 1.0)
                                               + c.get("eager_ops_tp_layer_bwd", 0.0))
        # the rest of the model's DTensor ops and collectives (embedding, output layer), with the output layer
        t_logits = t_logits + np.where(tp > 1, c["dtensor_op_us"] * 1e-6 * c.get("eager_ops_tp_model", 0.0)
                                       + c.get("tp_model_collectives", 0.0) * t_tp_one, 0.0)
    else:
        tp_host = c.get("tp_layer_overhead_s", 0.0)
    t_wrap = (np.where(dp * cp > 1, c.get("fsdp_layer_overhead_s", 0.0), 0.0) + np.where(tp > 1, tp_host, 0.0))
    t_layer_total = t_layer + tp_exposed + cp_exposed + ep_exposed + t_wrap
    # multi-token prediction (DeepSeek-V3): besides its layer (in the pipeline split above), each module projects
    # [hidden; next token's embedding] (2h -> h) and runs the output layer and loss again; reported with the
    # output layer
    if m.mtp_layers:
        f_pj, b_pj = lin(T, 2.0 * h, h)
        t_logits = t_logits + mtp * (f_pj + b_pj + t_logits)
    # DualPipe (DeepSeek-V3 report section 3.2.1, Figure 5 and Table 2's two copies of the parameters): rank i
    # holds stage i for the micro-batches fed from one end and stage p-1-i for those fed from the other, so the
    # rank with the embedding also holds the output head (section 3.2.3). Over a pair of micro-batches it runs
    # the first stage once and the last stage once: per micro-batch, its layers and half the output layer.
    # (DualPipeV's V holds the first and the last stage on rank 0 too, but runs both for every micro-batch.)
    t_head = t_logits * (0.5 if c["schedule"] == "dualpipe" else 1.0)
    # slowest stage per micro-batch: the last (its layers and the output layer) or, where the stack balances
    # the ends, a middle one
    last_slowest = layers_end * t_layer_total + t_head >= layers_mid * t_layer_total
    layers_crit = np.where(last_slowest, layers_end, layers_mid)
    t_mb = layers_crit * t_layer_total + np.where(last_slowest, t_head, 0.0)
    t_mb_first = layers_mid * t_layer_total

    # pipeline: bubble and point-to-point
    bub = bubble_fraction(pp, n_mb, vp, c["schedule"]) * np.where(pp > 1, 1.0, 0.0)
    t_bubble = bub * n_mb * t_mb
    p2p_msg = act_msg / np.where(sp, tp, 1.0)
    crosses = tp * cp * dp >= gpn
    t_p2p = np.where(pp > 1, 2.0 * vp * n_mb * comm.p2p_time(cluster, p2p_msg, crosses), 0.0)
    pp_exposed = (1.0 - c["pp_overlap"]) * t_p2p

    # ------------------------------------------------------------------ parameters and DP communication
    dense_layer_params = m.params_dense_layers / n_layers
    embed_stage = V * h / tp                                       # first/last stage holds one vocab matrix
    p_even = layers_stage * dense_layer_params / tp + np.where(pp > 1, embed_stage, m.embedding_params / tp)
    # balanced ends: the most parameters sit on a middle rank or on an end rank with its vocabulary matrix
    p_dense = np.where(stack_chunks, np.maximum(layers_mid * dense_layer_params / tp,
                                                layers_end * dense_layer_params / tp + embed_stage), p_even)
    # multi-token-prediction modules: their layers are in layers_stage (dense part) and below (experts); their
    # 2h x h projections sit with the output layer
    p_dense = p_dense + mtp * 2.0 * h * h / tp
    if m.moe:
        p_expert = ((m.n_moe_layers + mtp) / pp) * (m.moe.n_experts / ep) * m.expert_params / np.where(
            ep > 1, 1.0, tp)
    else:
        p_expert = np.zeros_like(tp)
    # DualPipe keeps two stages on each rank (stage i and stage p-1-i; "Parameter 2x", DeepSeek-V3 report Table 2):
    # weights, gradients, optimizer state and their data-parallel traffic double; the end rank's two stages
    # hold the embedding and the output head
    if c["schedule"] == "dualpipe":
        p_dense, p_expert = 2.0 * p_dense, 2.0 * p_expert
    p_gpu = p_dense + p_expert
    # ZeRO shards over data x context ranks, or over one replica's share of them (dp_replicate > 1: the
    # shard group is dp*cp/rep neighbouring ranks, and the rep groups all-reduce their gradient shards)
    shard = dp * cp / np.where(zero > 0, rep, 1.0)
    eshard = np.maximum(shard / ep, 1.0)
    dp_per_node = np.clip(gpn / (tp * cp), 1, shard)
    span = tp * shard                                             # GPUs one shard group spans
    gr = c["grad_reduce_bytes"]

    def gather(bytes_, n, per_node):
        return comm.allgather_time(cluster, bytes_, n, per_node, span)

    # across replicas: one all-reduce of this rank's gradient shard per step, between ranks a shard group
    # apart (in one node only when a whole shard group fits in less than a node)
    n_rep = np.where(zero > 0, rep, 1.0)
    rep_per_node = np.clip(gpn / span, 1, n_rep)
    # (a dense model issues no expert collectives: their latency is not paid)
    t_rep = comm.allreduce_time(cluster, p_dense * gr / shard, n_rep, rep_per_node, tp * cp * dp)
    if m.moe:
        t_rep = t_rep + comm.allreduce_time(cluster, p_expert * gr / eshard, n_rep, rep_per_node, tp * cp * dp)

    # per step, ZeRO-0..2: reduce gradients (+ gather updated weights for ZeRO-1/2)
    rs_shard = gather(p_dense * gr, shard, dp_per_node)              # within the shard group
    # parameters are gathered in 16 bits, or in fp8 where an fp8 run keeps fp8 weights (StackSpec.fp8_params)
    agb = np.where(fp8 & bool(stack.fp8_params), 1.0, 2.0)
    ag_params = gather(p_dense * agb, shard, dp_per_node)
    if m.moe:
        rs_shard = rs_shard + gather(p_expert * gr, eshard, dp_per_node)
        ag_params = ag_params + gather(p_expert * agb, eshard, dp_per_node)
    rs_grads = rs_shard + t_rep
    allreduce = 2.0 * rs_grads
    t_dp_step = np.where(zero == 0, allreduce, rs_grads + ag_params)
    window = np.where(c["dp_overlap"], (2.0 / 3.0) * t_mb_first, 0.0)    # backward of the last micro-batch
    # bucketed overlap (stack constant or the run's dp_bucket_params): gradients are reduced, and weights
    # gathered, in buckets of max(min, per_rank x DP ranks) parameters. A bucket closes at a whole parameter
    # tensor, so there are at most as many bucket groups as this stage's weight matrices (4 a dense layer:
    # QKV, attention output, MLP in, MLP out; 2 per local expert) plus one that the small tensors join
    bucket = c.get("dp_bucket_params")
    n_groups = 1.0
    if bucket and c["dp_overlap"]:
        b_params = np.minimum(p_gpu, np.maximum(float(bucket["min"]), float(bucket["per_dp_rank"]) * shard))
        n_mats = layers_stage * 4.0 + 1.0
        if m.moe:
            n_mats = n_mats + (m.n_moe_layers / pp) * 2.0 * m.moe.n_experts / ep
        n_groups = np.clip(np.ceil(p_gpu / b_params), 1.0, n_mats)
    # the weights' all-gathers hide behind the forward, each group prefetched while the one before computes.
    # With align_param_gather only an interleaved pipeline schedule starts them early (vp > 1); otherwise each
    # group's all-gather starts in its module's forward pre-hook and the forward waits for it (Megatron-Core
    # DistributedDataParallel forward pre-hook, skip_next_bucket_dispatch): all of them are exposed, and each
    # group pays its own collective latency on that path
    no_prefetch = bool(stack.align_param_gather) & (vp <= 1)
    group_latency = gather(0.0 * p_gpu, shard, dp_per_node)          # one all-gather of no bytes: its latency
    ag_serial = ag_params + (n_groups - 1.0) * group_latency
    t_dp_step = np.where(no_prefetch & (zero > 0), rs_grads + ag_serial, t_dp_step)
    ag_exposed = np.where(no_prefetch, ag_serial, np.maximum(0.0, ag_params - np.where(
        c["dp_overlap"], t_mb_first / 3.0, 0.0)))
    dp_exposed_12 = np.maximum(0.0, rs_grads - window) + np.where(
        zero == 0, np.maximum(0.0, allreduce - rs_grads - window), ag_exposed)
    # the last bucket (the first layers' gradients) is reduced after the backward ends, and with ZeRO-1/2 the
    # first bucket's updated weights are gathered before the next forward can start: one bucket's reduction
    # (and gather) stays exposed
    if bucket and c["dp_overlap"]:
        b_rs = gather(b_params * gr, shard, dp_per_node)
        b_exposed = np.where(zero == 0, 2.0 * b_rs, b_rs + gather(b_params * agb, shard, dp_per_node))
        dp_exposed_12 = np.maximum(dp_exposed_12, b_exposed)
    # ZeRO-3 / FSDP: gather weights for forward and backward, reduce-scatter grads, per micro-batch
    # (or once per step when weights stay gathered across micro-batches)
    per_mb = 2.0 * ag_params + rs_shard
    # a stack that keeps a stage's weights (and gradients) unsharded across micro-batches gathers once a step
    keep_w = _fsdp_keeps(c, "fsdp_unsharded_weights", pp)
    keep_g = _fsdp_keeps(c, "fsdp_unsharded_grads", pp)
    per_mb_gather = bool(c["fsdp_gather_per_microbatch"]) & ~keep_w
    hide = 1.0 if c["dp_overlap"] else 0.0
    comm3 = np.where(per_mb_gather, n_mb * per_mb, per_mb) + t_rep
    hide3 = np.where(per_mb_gather, n_mb, 1.0) * t_mb_first * hide
    first_gather = ag_params / np.maximum(layers_stage, 1)            # the first layer's gather is exposed
    # a stack that issues each backward all-gather only after the previous unit's gradients are computed
    # (FSDP1 BackwardPrefetch.BACKWARD_POST) leaves the backward's gathers exposed; the rest hides as before
    bwd_gather = np.where(per_mb_gather, n_mb, 1.0) * ag_params if c.get("fsdp_backward_prefetch") == "post" else 0.0
    dp_exposed_3 = bwd_gather + np.maximum(0.0, comm3 - bwd_gather - hide3) + first_gather
    dp_exposed = np.where(dp * cp > 1, np.where(zero == 3, dp_exposed_3, dp_exposed_12), 0.0)
    t_dp_total = np.where(zero == 3, comm3, t_dp_step)

    # optimizer: stream fp32 master, moments, grads and write 16-bit weights for this GPU's shard
    opt_shard = np.where(zero >= 1, shard, 1.0)
    opt_bytes = p_dense / opt_shard * (24.0 + c["grad_bytes"] + 2.0) + p_expert / np.where(
        zero >= 1, eshard, 1.0) * (24.0 + c["grad_bytes"] + 2.0)
    t_opt = compute.memory_time(g, opt_bytes)

    # communication hidden behind compute (each kind's total minus its exposed part) still slows that
    # compute: its kernels take SMs and HBM bandwidth (GPU constant overlap_compute_slowdown, seconds of
    # compute added per second hidden)
    t_ep_total = (m.n_moe_layers / n_layers) * t_ep if m.moe else 0.0
    per_layer_hidden = (t_tp - tp_exposed) + (np.where(cp > 1, t_cp, 0.0) - cp_exposed) + (t_ep_total - ep_exposed)
    dp_hidden = np.where(dp * cp > 1, np.maximum(t_dp_total - dp_exposed, 0.0), 0.0)
    hidden = n_mb * layers_crit * per_layer_hidden + (t_p2p - pp_exposed) + dp_hidden
    t_contention = g.overlap_compute_slowdown * hidden

    t_compute = n_mb * t_mb
    # the step waits for the slowest of its GPUs: compute (and the bubble, made of compute) stretches by the
    # expected slowest rank's factor under the GPUs' speed spread (physics/straggler.py)
    n_ranks = tp * pp * dp * cp
    t_straggler = (straggler.slowest_rank_factor(n_ranks, g.speed_spread) - 1.0) * (
        t_compute + t_bubble + t_contention)
    # optimizer and gradient-clipping ops per step (per layer of this stage, plus the rest of the model)
    t_ops_step = (c.get("eager_ops_optimizer_layer", 0.0) * layers_stage + c.get("eager_ops_optimizer", 0.0)) * op_s
    # ... and over DTensor parameters (a calibrated CPU: the stack's per-layer figures measured by calibrate):
    # DTensor's foreach ops and the all-reduce of each parameter's partial norm in gradient clipping
    t_ops_step = t_ops_step + layers_stage * (np.where(tp > 1, c.get("tp_optimizer_layer_s", 0.0), 0.0)
                                              + np.where(dp * cp > 1, c.get("fsdp_optimizer_layer_s", 0.0), 0.0))
    step = (t_compute + t_bubble + pp_exposed + dp_exposed + t_opt + t_contention + t_straggler
            + c["step_overhead_s"] + t_ops_step)

    # ------------------------------------------------------------------ memory per GPU
    # ZeRO-3 with fp32 sharded parameters (FSDP2 mixed precision): the fp32 shard is the master copy, so
    # there is no separate 16-bit sharded copy; a stack may keep the stage's 16-bit weights (and its fp32
    # gradient accumulation) unsharded across micro-batches
    shard_w = np.where(c.get("fsdp_fp32_params", False), 0.0, 2.0)
    # weights kept in fp8 (StackSpec.fp8_params) take 1 byte plus, where the chip's fp8 GEMMs need the transposed
    # operand (Hopper), a cached transpose: 2 bytes as a 16-bit weight; 1 where one copy serves both layouts
    w_bytes = np.where(fp8 & bool(stack.fp8_params) & bool(g.fp8_gemm_any_layout), 1.0, 2.0)
    weights = np.where(zero == 3, p_gpu * shard_w / shard + np.where(keep_w, p_gpu * 2.0, 0.0), p_gpu * w_bytes)
    grads = (p_dense * c["grad_bytes"] / np.where(zero >= 2, shard, 1.0)
             + p_expert * c["grad_bytes"] / np.where(zero >= 2, eshard, 1.0))
    grads = grads + np.where((zero == 3) & keep_g, p_gpu * c["grad_reduce_bytes"], 0.0)
    optim = p_dense * 12.0 / opt_shard + p_expert * 12.0 / np.where(zero >= 1, eshard, 1.0)
    policy = c.get("selective_policy", "attention_core")
    # an fp8 run on a stack that saves its GEMM inputs in fp8 (stack constant fp8_saved_inputs; physics/memory.py)
    f8_saved = fp8 & bool(c.get("fp8_saved_inputs", False))
    per_tok_layer = activation_bytes_per_token_layer(m, s, tp, sp, rc, flash, _dropout(m), cp, policy,
                                                     sp_gathered=c.get("sp_saves_gathered_inputs", False),
                                                     fp8_inputs=f8_saved)
    # micro-batches whose activations the first stage holds at once: pp under 1F1B, pp + (pp-1)/vp under the
    # interleaved schedule (Narayanan et al. 2021), never more than the micro-batches there are
    in_flight = np.where(pp > 1, np.minimum(pp * np.where(vp > 1, 1 + (pp - 1) / (pp * vp), 1.0), n_mb), 1.0)
    # recompute rebuilds one layer's dropped activations during its backward: that working set is live on
    # top of what is stored
    full_layer = activation_bytes_per_token_layer(m, s, tp, sp, 0, flash, _dropout(m), cp,
                                                  sp_gathered=c.get("sp_saves_gathered_inputs", False),
                                                  fp8_inputs=f8_saved)
    rebuilt = np.where(rc >= 1, np.maximum(full_layer - per_tok_layer, 0.0) * T, 0.0)
    acts_first = per_tok_layer * T * layers_end * in_flight + T * h * 2.0 + rebuilt
    # last stage: the logits and the loss's fp32 working copies (bytes per logit: a stack constant)
    acts_last = per_tok_layer * T * layers_end + T * V / tp * c["loss_bytes_per_logit"] + rebuilt
    # each multi-token-prediction module (its layer counted in layers_end): its [hidden; embedding] input and
    # its own logits and loss copies
    acts_last = acts_last + mtp * (T * 2.0 * h * 2.0 + T * V / tp * c["loss_bytes_per_logit"])
    activations = np.maximum(acts_first, acts_last)
    layer_w = dense_layer_params / tp * 2.0
    # ZeRO-3 / FSDP: a wrapped unit's 16-bit weights are gathered whole for its forward and backward, and its
    # backward leaves the unit's unsharded gradient (16-bit, plus the reduce copy where the stack reduces in
    # another precision) until the reduce-scatter; the next unit's weights are prefetched meanwhile. The
    # largest unit is a layer or, on the last stage, the output layer (vocabulary x hidden).
    unit_grad_b = 2.0 + np.where(c["grad_reduce_bytes"] != 2, c["grad_reduce_bytes"], 0.0)
    vocab_p = V * h / tp
    layer_peak = 2.0 * layer_w + dense_layer_params / tp * unit_grad_b
    out_peak = layer_w + vocab_p * (2.0 + unit_grad_b)
    z3_buf = np.maximum(layer_peak, out_peak)
    buffers = 4.0 * act_msg + np.where(zero == 3, z3_buf, 0.0) + c["reserved_gib"] * GIB
    total = weights + grads + optim + activations + buffers

    # ------------------------------------------------------------------ rates
    tokens_step = gb * s
    n_gpus = tp * pp * dp * cp
    mflops_tok = model_flops_per_token(m, s)
    peak16 = g.peak("bf16")
    tok_s = tokens_step / step
    tok_s_gpu = tok_s / n_gpus
    # hardware FLOPs for HFU: full recompute runs every layer's forward again (not the output layer);
    # selective reruns the attention core where the stack does, and its share of the forward GEMMs
    mm = layer_matmul_flops(m)
    sel_flops = n_layers * (c["selective_gemm_recompute"] * (mm["attn_proj"] + mm["mlp"])
                            + (attention_core_flops(m, s, causal=False) if c["selective_core"] else 0.0))
    hw_extra = np.where(rc == 2, (mflops_tok - 3.0 * logits_flops(m)) / 3.0,
                        np.where(rc == 1, sel_flops, 0.0)) / mflops_tok
    return {
        "step_time_s": step, "tokens_per_step": tokens_step, "tokens_per_s": tok_s,
        "tokens_per_s_per_gpu": tok_s_gpu, "model_flops_per_token": np.broadcast_to(mflops_tok, np.shape(step)),
        "tflops_per_gpu": mflops_tok * tok_s_gpu / 1e12, "mfu": mflops_tok * tok_s_gpu / peak16,
        "hfu": mflops_tok * (1 + hw_extra) * tok_s_gpu / peak16,
        "n_microbatches": n_mb, "n_gpus": n_gpus, "virtual_stages": np.broadcast_to(vp, np.shape(step)),
        # time per step, seconds (compute split by op class)
        "t_gemm_attn_proj": n_mb * layers_crit * (t_attn_proj_f + t_attn_proj_b),
        "t_gemm_mlp": n_mb * layers_crit * (t_mlp_f + t_mlp_b),
        "t_attention": n_mb * layers_crit * (t_core_f + t_core_b),
        "t_memory_bound": n_mb * layers_crit * 3 * t_elem_f,
        "t_recompute": n_mb * layers_crit * t_recomp,
        "t_output_layer": n_mb * np.where(last_slowest, t_head, 0.0),
        "t_tp_comm": n_mb * layers_crit * tp_exposed, "t_cp_comm": n_mb * layers_crit * cp_exposed,
        "t_ep_comm": n_mb * layers_crit * ep_exposed, "t_pp_comm": pp_exposed, "t_bubble": t_bubble,
        "t_dp_comm": dp_exposed, "t_dp_comm_total": t_dp_total, "t_optimizer": t_opt,
        "t_overlap_slowdown": t_contention, "t_straggler": t_straggler,
        # host time of eager ops (layers and optimizer; a recomputed forward's are in t_recompute)
        # (the output layer's are in t_output_layer)
        "t_op_overhead": n_mb * layers_crit * (t_ops_f + t_ops_b + t_wrap) + t_ops_step,
        "t_compute": t_compute,
        # memory per GPU, bytes
        "m_weights": weights, "m_gradients": grads, "m_optimizer": optim, "m_activations": activations,
        "m_buffers": buffers, "m_total": total, "fits": total <= g.hbm_gib * GIB,
        "params_per_gpu": p_gpu,
    }


class StepEstimate(BaseModel):
    """One predicted training step. Times in seconds per step, memory in GiB per GPU."""

    model: str
    gpu: str
    n_gpus: int
    layout: Layout
    stack: StackSpec
    step_time_s: float
    tokens_per_step: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    tflops_per_gpu: float
    model_flops_per_token: float
    mfu: float
    hfu: float
    memory_gib_per_gpu: float
    hbm_gib: float
    fits: bool
    n_microbatches: float
    virtual_stages: float = 1.0     # model chunks per pipeline rank the step ran (a stack may set them)
    time_s: dict[str, float]
    memory_gib: dict[str, float]
    phases_s: dict[str, float]


TIME_KEYS = ("gemm_attn_proj", "gemm_mlp", "attention", "memory_bound", "recompute", "output_layer",
             "tp_comm", "cp_comm", "ep_comm", "pp_comm", "bubble", "dp_comm", "overlap_slowdown", "optimizer",
             "straggler", "op_overhead")
MEMORY_KEYS = ("weights", "gradients", "optimizer", "activations", "buffers")


def layout_arrays(layout: Layout) -> dict[str, Any]:
    """A Layout as the scalar dict ``estimate_arrays`` takes."""
    d = layout.model_dump()
    return {**{k: d[k] for k in LAYOUT_KEYS if k in d}, "recompute": RECOMPUTE[layout.recompute],
            "fp8": layout.precision == "fp8", "dp_replicate": layout.dp_replicate}


def estimate(model: ModelSpec, cluster: ClusterSpec, layout: Layout, stack: StackSpec | None = None,
             check: bool = True) -> StepEstimate:
    """Predict one training step; with ``check``, invalid layouts raise UserError (see ``validate_layout``)."""
    from .layout_check import validate_layout

    stack = stack or StackSpec()
    if check:
        validate_layout(model, cluster, layout)
    r = estimate_arrays(model, cluster, stack, layout_arrays(layout))
    f = {k: float(np.asarray(v)) for k, v in r.items()}
    time_s = {k: f["t_" + k] for k in TIME_KEYS}
    memory = {k: f["m_" + k] / GIB for k in MEMORY_KEYS}
    comm_exposed = sum(time_s[k] for k in ("tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm"))
    phases = {"compute": f["t_compute"] - (time_s["tp_comm"] + time_s["cp_comm"] + time_s["ep_comm"])
              + time_s["overlap_slowdown"],
              "communication": comm_exposed, "bubble": time_s["bubble"], "optimizer": time_s["optimizer"]}
    phases["other"] = max(0.0, f["step_time_s"] - sum(phases.values()))
    return StepEstimate(
        model=model.name, gpu=cluster.gpu.id, n_gpus=int(f["n_gpus"]), layout=layout, stack=stack,
        step_time_s=f["step_time_s"], tokens_per_step=f["tokens_per_step"], tokens_per_s=f["tokens_per_s"],
        tokens_per_s_per_gpu=f["tokens_per_s_per_gpu"], tflops_per_gpu=f["tflops_per_gpu"],
        model_flops_per_token=f["model_flops_per_token"], mfu=f["mfu"], hfu=f["hfu"],
        memory_gib_per_gpu=f["m_total"] / GIB, hbm_gib=cluster.gpu.hbm_gib, fits=bool(f["fits"]),
        n_microbatches=f["n_microbatches"], virtual_stages=f["virtual_stages"], time_s=time_s,
        memory_gib=memory, phases_s=phases)
