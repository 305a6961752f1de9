"""Models from files: a Hugging Face ``config.json`` or a YAML/JSON mapping of :class:`ModelSpec` fields.

Supported Hugging Face architectures (the first entry of ``architectures``, or ``model_type``):

- dense, gated FFN: ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM``, ``Qwen3ForCausalLM``
- MoE: ``MixtralForCausalLM``, ``Qwen2MoeForCausalLM`` (shared expert), ``Qwen3MoeForCausalLM``
- MoE with multi-head latent attention: ``DeepseekV3ForCausalLM``, ``DeepseekV2ForCausalLM`` (with query
  compression, i.e. ``q_lora_rank`` set)

What the step model needs is read; the rest (norm epsilons, RoPE base, sliding windows, biases, q/k norms,
the multi-token-prediction layers of DeepSeek-V3) does not change the parameter count by more than a
fraction of a percent and is ignored. All of these architectures use a gated FFN (three matrices), recorded as
``mlp: swiglu`` whatever the gate's activation. ``seq_len`` is the pre-training context where the config says
it (``rope_scaling.original_max_position_embeddings``), else ``max_position_embeddings`` capped at
:data:`DEFAULT_SEQ_LEN` (8,192): ``max_position_embeddings`` is the longest context the model accepts (131,072
for Llama 3.1), not the one it trains most tokens at; ``--seq-len`` sets another. The model is named after the
config's ``_name_or_path``, else its ``model_type``, not after the folder it sits in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from ..errors import UserError, short
from ..specs import ModelSpec
from . import read_yaml_or_json, validation_message

# Default training context when a config gives only its maximum: Llama 3's pre-training context (arXiv
# 2407.21783 section 3.4.1: 8K tokens, extended to 128K only in a final long-context stage).
DEFAULT_SEQ_LEN = 8192

_MODEL_TYPES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v2": "DeepseekV2ForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}


def _whole_number(value: Any) -> int | None:
    """``value`` as an int if it is a whole number (``4096`` or ``4096.0``), else None (bools, text, 1.5, NaN)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class _Config:
    """Typed access to one config.json, with one-line errors naming the file and the key."""

    def __init__(self, data: dict, where: str, arch: str) -> None:
        self.data, self.where, self.arch = data, where, arch

    def _fail(self, msg: str) -> UserError:
        return UserError(f"{self.where}: {msg} ({self.arch})")

    def whole(self, key: str, default: Any = ..., *, minimum: int = 1) -> Any:
        """A whole-number value >= ``minimum``; ``default`` when the key is absent or null (``...``: required)."""
        value = self.data.get(key)
        if value is None:
            if default is ...:
                raise self._fail(f"missing key {short(key)}, needed for this architecture")
            return default
        if _whole_number(value) is None:
            raise self._fail(f"{key} must be a whole number, got {short(value)}")
        value = _whole_number(value)
        if value < minimum:
            what = "positive" if minimum == 1 else f">= {minimum}"
            raise self._fail(f"{key} must be {what}, got {short(value)}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(f"{key} must be true or false, got {short(value)}")
        return value


def _base(c: _Config) -> dict[str, Any]:
    """Fields shared by every supported architecture."""
    out: dict[str, Any] = dict(
        n_layers=c.whole("num_hidden_layers"),
        d_model=c.whole("hidden_size"),
        n_heads=c.whole("num_attention_heads"),
        ffn_hidden=c.whole("intermediate_size"),
        vocab=c.whole("vocab_size"),
        mlp="swiglu",
        tied_embeddings=c.flag("tie_word_embeddings", False),
    )
    rope = c.data.get("rope_scaling")
    original = rope.get("original_max_position_embeddings") if isinstance(rope, dict) else None
    if original is not None:
        out["seq_len"] = _whole(c, "rope_scaling.original_max_position_embeddings", original)
    else:
        seq_len = c.whole("max_position_embeddings", None)
        if seq_len is not None:
            out["seq_len"] = min(seq_len, DEFAULT_SEQ_LEN)
    return out


def _whole(c: _Config, key: str, value: Any) -> int:
    n = _whole_number(value)
    if n is None or n < 1:
        raise c._fail(f"{key} must be a positive whole number, got {short(value)}")
    return n


def _attention(c: _Config, out: dict[str, Any]) -> None:
    """Grouped-query attention: KV heads and an explicit head dimension where the config gives one."""
    kv = c.whole("num_key_value_heads", None)
    if kv is not None and out["n_heads"] % kv:
        raise c._fail(f"num_attention_heads {out['n_heads']} is not divisible by num_key_value_heads {kv}")
    if kv is not None and kv != out["n_heads"]:
        out["n_kv_heads"] = kv
    hd = c.whole("head_dim", None)
    if hd is not None and hd * out["n_heads"] != out["d_model"]:
        out["head_dim"] = hd
    elif hd is None and out["d_model"] % out["n_heads"]:
        raise c._fail(f"hidden_size {out['d_model']} is not divisible by num_attention_heads "
                      f"{out['n_heads']} and there is no head_dim")


def _dense(c: _Config) -> dict[str, Any]:
    out = _base(c)
    _attention(c, out)
    return out


def _top_k(c: _Config, experts_key: str) -> int:
    """Routed experts per token, checked against the number of experts."""
    k, n = c.whole("num_experts_per_tok"), c.whole(experts_key)
    if k > n:
        raise c._fail(f"num_experts_per_tok {k} is larger than {experts_key} {n}")
    return k


def _mixtral(c: _Config) -> dict[str, Any]:
    out = _dense(c)
    out["moe"] = dict(n_experts=c.whole("num_local_experts"), top_k=_top_k(c, "num_local_experts"),
                      expert_ffn_hidden=out["ffn_hidden"])
    return out


def _sparse_step(c: _Config) -> dict[str, int]:
    """Qwen MoE layers: layer i (0-based) is MoE when (i + 1) % decoder_sparse_step == 0, i.e. the
    ``step``-th, ``2 step``-th, ... layers: ``step - 1`` leading dense layers, then every ``step``-th."""
    if c.data.get("mlp_only_layers"):
        raise c._fail("mlp_only_layers (dense layers at arbitrary positions) is not supported; "
                      "remove it or describe the model as a ModelSpec YAML")
    step = c.whole("decoder_sparse_step", 1)
    return dict(n_dense_layers=step - 1, moe_layer_freq=step)


def _qwen_moe(c: _Config, shared: bool) -> dict[str, Any]:
    out = _dense(c)
    moe = dict(n_experts=c.whole("num_experts"), top_k=_top_k(c, "num_experts"),
               expert_ffn_hidden=c.whole("moe_intermediate_size"), **_sparse_step(c))
    if shared:
        width = c.whole("shared_expert_intermediate_size", 0, minimum=0)
        if width:
            moe.update(n_shared_experts=1, shared_ffn_hidden=width)
    out["moe"] = moe
    return out


def _deepseek(c: _Config) -> dict[str, Any]:
    out = _base(c)
    if c.data.get("q_lora_rank") is None:
        raise c._fail("q_lora_rank is null (no query compression, as in DeepSeek-V2-Lite); megacluster models "
                      "multi-head latent attention with query compression only")
    mtp = c.whole("num_nextn_predict_layers", 0, minimum=0)     # DeepSeek-V3's multi-token-prediction modules
    if mtp:
        out["mtp_layers"] = mtp
    out["mla"] = dict(q_lora_rank=c.whole("q_lora_rank"), kv_lora_rank=c.whole("kv_lora_rank"),
                      qk_nope_head_dim=c.whole("qk_nope_head_dim"), qk_rope_head_dim=c.whole("qk_rope_head_dim"),
                      v_head_dim=c.whole("v_head_dim"))
    n_routed = c.whole("n_routed_experts", None)
    if n_routed:
        out["moe"] = dict(n_experts=n_routed, top_k=_top_k(c, "n_routed_experts"),
                          expert_ffn_hidden=c.whole("moe_intermediate_size"),
                          n_shared_experts=c.whole("n_shared_experts", 0, minimum=0),
                          n_dense_layers=c.whole("first_k_dense_replace", 0, minimum=0),
                          moe_layer_freq=c.whole("moe_layer_freq", 1))
    return out


_ARCHS: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "LlamaForCausalLM": _dense,
    "MistralForCausalLM": _dense,
    "Qwen2ForCausalLM": _dense,
    "Qwen3ForCausalLM": _dense,
    "MixtralForCausalLM": _mixtral,
    "Qwen2MoeForCausalLM": lambda c: _qwen_moe(c, shared=True),
    "Qwen3MoeForCausalLM": lambda c: _qwen_moe(c, shared=False),
    "DeepseekV2ForCausalLM": _deepseek,
    "DeepseekV3ForCausalLM": _deepseek,
}

SUPPORTED_ARCHITECTURES = tuple(_ARCHS)


def _architecture(data: dict, where: str) -> str:
    archs = data.get("architectures")
    if archs is not None and not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
        raise UserError(f"{where}: 'architectures' must be a list of names, got {short(archs)}")
    candidates = list(archs or [])
    model_type = data.get("model_type")
    if isinstance(model_type, str):
        candidates.append(_MODEL_TYPES.get(model_type, f"model_type {model_type!r}"))
    for a in candidates:
        if a in _ARCHS:
            return a
    if not candidates:
        raise UserError(f"{where}: no 'architectures' or 'model_type' key, so the architecture is unknown; add "
                        f"one of: {', '.join(SUPPORTED_ARCHITECTURES)}")
    named = candidates[0]
    raise UserError(f"{where}: unsupported architecture {named}; supported: {', '.join(SUPPORTED_ARCHITECTURES)} "
                    "(or write the model as a YAML of ModelSpec fields)")


def model_from_hf_config(data: dict, name: str, where: str = "config.json") -> ModelSpec:
    """A :class:`ModelSpec` from a parsed Hugging Face ``config.json`` mapping.

    ``name`` is the model's display name, ``where`` the file named in error messages.
    """
    arch = _architecture(data, where)
    c = _Config(data, where, arch)
    fields = _ARCHS[arch](c)
    fields.update(name=name, source=f"Hugging Face config.json ({arch}): {where}")
    try:
        return ModelSpec(**fields)
    except ValidationError as err:
        raise UserError(_message(err, where)) from None


def _message(err: ValidationError, where: str) -> str:
    """One line for a ModelSpec validation error (a whole-model check has no field location to name)."""
    first = err.errors()[0]
    if not first["loc"]:
        return f"{where}: {first['msg'].removeprefix('Value error, ')}"
    return validation_message(err, where)


_HF_KEYS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _is_hf_config(data: dict, p: Path) -> bool:
    """A Hugging Face config (as opposed to ModelSpec fields): named config.json or using HF key names."""
    return p.name == "config.json" or any(k in data for k in _HF_KEYS)


def model_from_file(path: str | Path) -> ModelSpec:
    """A model from a file: a Hugging Face ``config.json`` (or a checkpoint folder holding one), or a YAML/JSON
    mapping of :class:`ModelSpec` fields (``id``/``aliases`` allowed and ignored; ``name`` defaults to the
    file name). Bad input raises :class:`UserError` with one line."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    data = read_yaml_or_json(p, "model file")
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise UserError(f"{p}: expected a mapping of model fields (a Hugging Face config.json or ModelSpec "
                        f"YAML), got {kind}")
    default_name = p.parent.name if p.name == "config.json" and p.parent.name else p.stem
    if _is_hf_config(data, p):
        name = next((data[k] for k in ("_name_or_path", "model_type") if isinstance(data.get(k), str) and
                     data[k].strip()), None)
        return model_from_hf_config(data, name or p.stem, str(p))
    fields = {k: v for k, v in data.items() if k not in ("id", "aliases")}
    fields.setdefault("name", str(data.get("id") or default_name))
    fields.setdefault("source", f"model file {p}")
    try:
        return ModelSpec(**fields)
    except ValidationError as err:
        raise UserError(_message(err, str(p))) from None
