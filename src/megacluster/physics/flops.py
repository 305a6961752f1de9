"""FLOPs of a decoder transformer, per token, forward pass unless said otherwise.

Conventions (see docs/architecture.md): a multiply-add is 2 FLOPs; backward = 2 x forward for matmuls.
*Model FLOPs* (for MFU) count every matmul of forward + backward once and attention without the causal
halving, which is Megatron's 72BsLh^2(1 + s/6h + V/12Lh) (Narayanan et al. 2021 eq. 3 without recompute) and
PaLM's 6N + 12Lhs. *Hardware FLOPs* (HFU) add what recompute executes again.
"""

from __future__ import annotations

from ..specs import ModelSpec


def attn_dims(m: ModelSpec) -> tuple[int, int]:
    """(query-key dim, value dim) summed over all heads; MLA uses its nope+rope and value head dims."""
    if m.mla:
        return m.n_heads * (m.mla.qk_nope_head_dim + m.mla.qk_rope_head_dim), m.n_heads * m.mla.v_head_dim
    return m.n_heads * m.hd, m.n_heads * m.hd


def layer_matmul_flops(m: ModelSpec) -> dict[str, float]:
    """Forward matmul FLOPs per token averaged over layers, split by op class (attention projections, MLP)."""
    attn_proj = 2.0 * m.attn_params
    dense_mlp = 2.0 * m.ffn_params(m.ffn_hidden)
    if m.moe:
        moe_mlp = 2.0 * (m.moe.top_k * m.expert_params + m.shared_expert_params + m.d_model * m.moe.n_experts)
        mlp = (m.n_dense_ffn_layers * dense_mlp + m.n_moe_layers * moe_mlp) / m.n_layers
    else:
        mlp = dense_mlp
    return {"attn_proj": attn_proj, "mlp": mlp}


def attention_core_flops(m: ModelSpec, seq_len: float, causal: bool = True):
    """Forward FLOPs per token of QK^T and attention x V for a sequence of ``seq_len`` tokens.

    ``causal=True`` is the work a flash-attention kernel does (half the score matrix is skipped);
    ``causal=False`` is the model-FLOPs convention (12 L h s for all passes)."""
    qk, v = attn_dims(m)
    full = 2.0 * seq_len * (qk + v)
    return full * 0.5 if causal else full


def logits_flops(m: ModelSpec) -> float:
    """Forward FLOPs per token of the output projection to the vocabulary."""
    return 2.0 * m.vocab * m.d_model


def model_flops_per_token(m: ModelSpec, seq_len):
    """Model FLOPs per trained token (forward + backward, no recompute): 6 x active matmul params + attention."""
    mm = layer_matmul_flops(m)
    per_layer = mm["attn_proj"] + mm["mlp"] + attention_core_flops(m, seq_len, causal=False)
    return 3.0 * (m.n_layers * per_layer + logits_flops(m))


def megatron_eq3_flops_per_token(L: int, h: int, s: int, V: int, full_recompute: bool = True) -> float:
    """Narayanan et al. 2021 eq. 3 per token: 96Lh^2(1 + s/6h + V/16Lh) with full recompute, else
    72Lh^2(1 + s/6h + V/12Lh). Used to check the general counter on GPT-style models."""
    if full_recompute:
        return 96.0 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    return 72.0 * L * h * h * (1 + s / (6 * h) + V / (12 * L * h))
