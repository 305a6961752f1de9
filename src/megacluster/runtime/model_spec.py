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
    """
    from pydantic import ValidationError

    from ..catalog import validation_message

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
        moe = dict(m.model_dump(), n_experts=n_exp, top_k=min(top_k or m.top_k, n_exp))
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
        upd["moe"] = MoESpec(n_experts=experts, top_k=min(top_k or 2, experts),
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
