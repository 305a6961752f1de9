"""Bytes per GPU: weights, gradients, optimizer state, activations.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models", section 4), generalised to grouped-query attention and gated MLPs. Per layer and per token, in
bytes with 16-bit activations, for hidden size h, FFN width f, heads a, sequence s:

* attention block: 2h (QKV input) + 2(q + k) (Q, K) + 2v (V) + 2q (output-projection input) + h (dropout
  mask) + 5as (scores, softmax, dropout; only when scores are materialised, i.e. no flash attention)
* MLP block: 2h (input) + 2f (activation input; 4f when gated) + 2f (activation output) + h (dropout mask)
* two norms: 4h

For GPT (q = k = v = h, f = 4h, dropout) this is Korthikanti's 34h + 5as per token.

An fp8 run whose stack saves each GEMM's input for the backward as one fp8 copy (``fp8_inputs``;
Transformer Engine's Linear and LayerNormLinear, 1.x and 2.x: one row-wise or one transposed copy, 1 byte)
stores the QKV and FC1 inputs (the norm outputs) and the FC2 input (the activation output) in 1 byte
instead of 2, and keeps the output projection's fp8 input (q bytes) on top of the 16-bit attention output
that the attention kernel saves anyway. The norm inputs, Q, K, V, the attention output and the FC1 output
(the activation's input) stay 16-bit (TE's ``fp8_dot_product_attention`` and Megatron's
``activation_func_fp8_input_store`` are not modelled). Tensor parallelism
divides the parts inside attention and MLP by t; sequence parallelism also divides the rest. Selective
recompute drops the 5as term; full recompute keeps only the layer input (2h, divided by t with SP).

Selective recompute is a policy of the software stack (``selective_policy``):

* ``attention_core`` (Megatron, Korthikanti et al.): everything above but the attention scores.
* ``every_other_matmul`` (torchtitan's per-op selective checkpointing, ``activation_checkpoint.py``): the
  layer input, the flash-attention output, and the outputs of the 1st, 3rd, 5th, ... matmul of the layer in
  call order (Q, K, V, O, then the MLP's up/gate and down projections); everything else is recomputed. A
  row-parallel matmul's local output is the full width h (a partial sum before the reduce-scatter), so it is
  not divided by t.
"""

from __future__ import annotations

import numpy as np

from ..specs import ModelSpec
from .flops import attn_dims

GIB = 1024.0 ** 3


def activation_bytes_per_token_layer(m: ModelSpec, seq_len, tp=1, sp=False, recompute="none",
                                     flash=True, dropout=False, cp=1, selective_policy="attention_core",
                                     sp_gathered=False, fp8_inputs=False):
    """Activation bytes stored per token per layer for the backward pass (one GPU's share).

    ``recompute``: "none", "selective" or "full" (or an integer array 0/1/2). ``cp`` splits the sequence,
    which ``seq_len`` already is the full length of (the 5as term uses the local key length s/cp... times
    the full query set is split, so it divides by cp). ``fp8_inputs`` (bool or array): the GEMM inputs are
    saved in fp8 (module docstring)."""
    h = m.d_model
    qd, vd = attn_dims(m)
    kd = m.kv_heads * (qd // m.n_heads) if not m.mla else qd
    vd_kv = m.kv_heads * m.hd if not m.mla else vd
    f = m.ffn_hidden
    if m.moe:  # routed tokens: top_k expert activations of the expert width, plus shared experts
        fe = m.moe.top_k * m.moe.expert_ffn_hidden + m.moe.n_shared_experts * (
            m.moe.shared_ffn_hidden or m.moe.expert_ffn_hidden)
        f = (m.n_dense_ffn_layers * m.ffn_hidden + m.n_moe_layers * fe) / m.n_layers
    drop = 1.0 if dropout else 0.0
    tp = np.asarray(tp, dtype=float)
    rc = _recompute_code(recompute)
    f8 = np.asarray(fp8_inputs, dtype=bool)
    gemm_in = np.where(f8, 1.0, 2.0)                     # bytes per element of a saved GEMM input
    # Q, K, V and the attention output (the output projection's input; its fp8 copy adds qd when fp8)
    inner_attn = 2 * (qd + kd) + 2 * vd_kv + 2 * qd + np.where(f8, qd, 0.0)
    # the activation's input (FC1 output, 16-bit) and its output (the FC2 input)
    inner_mlp = (4 if m.gated else 2) * f + gemm_in * f
    outer = 2 * h + drop * h + 2 * h + drop * h          # the two norms' inputs and the dropout masks
    gathered = 2 * gemm_in * h                           # the attention and MLP blocks' input (norm outputs)
    scores = np.where(np.logical_or(flash, rc >= 1), 0.0, 5.0 * m.n_heads * np.asarray(seq_len, float) / cp)
    outer_div = np.where(sp, tp, 1.0)
    full_layer = (inner_attn + inner_mlp + scores) / tp + outer / outer_div + gathered / np.where(
        sp_gathered, 1.0, outer_div)
    input_only = 2.0 * h / outer_div
    if selective_policy == "every_other_matmul":
        selective = input_only + 2.0 * qd / tp + every_other_matmul_bytes(m, f, tp)
    elif selective_policy == "attention_core":
        selective = full_layer
    else:
        raise ValueError(f"unknown selective recompute policy {selective_policy!r}")
    return np.where(rc == 2, input_only, np.where(rc == 1, selective, full_layer))


def every_other_matmul_bytes(m: ModelSpec, f, tp=1):
    """Bytes per token of the matmul outputs that torchtitan's per-op checkpointing keeps: the odd ones
    in call order. Column-parallel outputs (Q, K, V, up, gate) are split by t; row-parallel ones (O, down)
    are a full-width partial sum on every rank."""
    qd = attn_dims(m)[0]
    kv = m.kv_heads * m.hd if not m.mla else qd
    tp = np.asarray(tp, dtype=float)
    row = np.full_like(tp, float(m.d_model))           # row-parallel outputs: full width on every rank
    widths = [qd / tp, kv / tp, kv / tp, row] + [f / tp] * (2 if m.gated else 1) + [row]
    return sum(2.0 * w for w in widths[::2])


def _recompute_code(recompute):
    if isinstance(recompute, str):
        return np.asarray({"none": 0, "selective": 1, "full": 2}[recompute])
    return np.asarray(recompute)


def korthikanti_activation_bytes(s, b, h, a, t=1, sp=False, selective=False):
    """Korthikanti et al. 2022 closed forms for GPT layers (bytes per layer): sbh(34 + 5as/h) without
    parallelism, sbh(10 + 24/t + 5as/(ht)) with TP, (sbh/t)(34 + 5as/h) with TP+SP, 34sbh/t with
    TP+SP+selective recompute."""
    if selective:
        return s * b * h * 34 / t if sp else s * b * h * (10 + 24 / t)
    if sp:
        return s * b * h / t * (34 + 5 * a * s / h)
    return s * b * h * (10 + 24 / t + 5 * a * s / (h * t))


def optimizer_bytes_per_param(master_fp32=True) -> float:
    """Adam state per parameter: fp32 master weights (4, if kept) + first and second moments (8)."""
    return 12.0 if master_fp32 else 8.0


def mixed_precision_adam_bytes_per_param(grad_bytes: float = 2.0) -> float:
    """Total training state per parameter: 2 (16-bit weights) + grads + 12 (fp32 master, m, v).
    16 bytes with 16-bit grads (Rajbhandari et al. 2020, ZeRO section 3.1); 18 with fp32 grads."""
    return 2.0 + grad_bytes + optimizer_bytes_per_param()
