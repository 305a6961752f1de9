"""Model shapes for the runtime (no torch here): scaling a catalog model down to fit small hardware."""

from __future__ import annotations

import math

from ..errors import UserError
from ..specs import ModelSpec, MoESpec


def scale_model(spec: ModelSpec, *, layers: int | None = None, d_model: int | None = None,
                heads: int | None = None, kv_heads: int | None = None, ffn: int | None = None,
                vocab: int | None = None, experts: int | None = None, top_k: int | None = None,
                seq_len: int | None = None) -> ModelSpec:
    """The same architecture with some shapes replaced (to train a scaled-down copy on small hardware).

    When ``d_model`` changes and ``ffn`` is not given, the FFN (and expert) widths keep their ratio to
    ``d_model``, rounded up to a multiple of 8. When ``heads`` changes and ``kv_heads`` is not given, the
    query/kv head ratio is kept where it divides. An explicit head dimension is dropped (``d_model/heads``).
    When ``d_model`` changes and ``heads`` is not given, the head count follows the width so that the head
    dimension stays the model's (at least one head; the largest count that divides ``d_model``).
    A value of zero or less, or ``top_k`` above the expert count, raises :class:`UserError`.
    """
    from pydantic import ValidationError

    from ..catalog import validation_message

    flags = {"layers": layers, "d-model": d_model, "heads": heads, "kv-heads": kv_heads, "ffn": ffn,
             "vocab": vocab, "experts": experts, "top-k": top_k, "seq-len": seq_len}
    for flag, v in flags.items():
        if v is not None and v <= 0:
            raise UserError(f"--{flag} must be positive, got {v}")
    n_exp = experts or (spec.moe.n_experts if spec.moe else None)
    if top_k is not None and n_exp is not None and top_k > n_exp:
        raise UserError(f"--top-k {top_k} is more than the {n_exp} experts; pass --top-k {n_exp} or fewer "
                        f"(or more --experts)")
    if d_model and not heads:
        heads = _heads_for(d_model, spec.hd, spec.n_heads)
        if heads == spec.n_heads:
            heads = None
    upd: dict = {}
    ratio = (d_model / spec.d_model) if d_model else 1.0

    def width(w: int) -> int:
        return max(8, int(math.ceil(w * ratio / 8)) * 8)

    if layers:
        upd["n_layers"] = layers
    if d_model:
        upd["d_model"] = d_model
        upd["head_dim"] = None
        upd["ffn_hidden"] = ffn or width(spec.ffn_hidden)
    elif ffn:
        upd["ffn_hidden"] = ffn
    if heads:
        upd["n_heads"] = heads
        upd["head_dim"] = None
        if not kv_heads:
            group = spec.n_heads // spec.kv_heads
            upd["n_kv_heads"] = heads // group if heads % group == 0 and heads >= group else heads
    if kv_heads:
        upd["n_kv_heads"] = kv_heads
    if vocab:
        upd["vocab"] = vocab
    if seq_len:
        upd["seq_len"] = seq_len
    if spec.moe and (d_model or ffn or experts or top_k or layers):
        m = spec.moe
        n_exp = experts or m.n_experts
        moe = dict(m.model_dump(), n_experts=n_exp, top_k=top_k or min(m.top_k, n_exp))
        if d_model or ffn:
            moe["expert_ffn_hidden"] = width(m.expert_ffn_hidden) if d_model else ffn
            if m.shared_ffn_hidden:
                moe["shared_ffn_hidden"] = width(m.shared_ffn_hidden) if d_model else ffn
        if layers:
            moe["n_dense_layers"] = min(m.n_dense_layers, max(layers - 1, 0))
        upd["moe"] = MoESpec(**moe)
    elif experts or top_k:
        if not experts:
            raise UserError("--top-k needs --experts for a dense model (it has no MoE layers)")
        upd["moe"] = MoESpec(n_experts=experts, top_k=top_k or min(2, experts),
                             expert_ffn_hidden=upd.get("ffn_hidden", spec.ffn_hidden))
    if not upd:
        return spec
    data = spec.model_dump()
    data.update(upd)
    data["name"] = f"{spec.name} (scaled)"
    try:
        return ModelSpec(**data)
    except ValidationError as e:
        raise UserError(validation_message(e, "scaled model")) from None


def _heads_for(d_model: int, head_dim: int, max_heads: int) -> int:
    """Heads of a ``d_model`` wide copy that keep ``head_dim``: the largest count <= d_model / head_dim (and
    <= the model's) that divides ``d_model``; at least one."""
    target = max(1, min(max_heads, d_model // head_dim))
    return next(h for h in range(target, 0, -1) if d_model % h == 0)
