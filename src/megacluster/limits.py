"""Bounds on what megacluster accepts: every count and size is at most what any real system could have.

A number past these bounds is not a question anyone can ask of a real cluster (and would cost the search or
the simulation memory and hours), so it is refused with one line that names the bound and why it is there.
Each bound is generous: far above the largest system or model built so far.

The largest figures in the catalog, for scale: 100,000 GPUs (xAI Colossus), 126 layers (Llama 3.1 405B),
hidden size 18,432 (Nemotron-4 340B), 256 routed experts (DeepSeek-V3), vocabularies of 256,000 (Gemma),
131,072-token context.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

from .errors import UserError, short

# name -> (most allowed, why); names are field names of the specs and the flags' names without dashes
MAX: dict[str, tuple[float, str]] = {
    "gpus": (10_000_000, "100 times the largest GPU cluster built, 100,000 to 200,000 GPUs"),
    "n_gpus": (10_000_000, "100 times the largest GPU cluster built, 100,000 to 200,000 GPUs"),
    "gpus_per_node": (1024, "the largest NVLink system is 576 GPUs (NVL576)"),
    "nics_per_node": (1024, "a node has at most a few NICs per GPU"),
    "nvlink_domain": (100_000, "the largest NVLink domain is 576 GPUs (NVL576)"),
    "nic_gbps": (100_000, "100 Tb/s, over 100 times the fastest NIC (800 Gb/s)"),
    "n_layers": (100_000, "the deepest trained transformers have a few hundred layers"),
    "d_model": (1_000_000, "the widest models have a hidden size of about 20,000"),
    "n_heads": (100_000, "models have at most a few hundred attention heads"),
    "n_kv_heads": (100_000, "models have at most a few hundred attention heads"),
    "head_dim": (100_000, "head dimensions are 64 to 256"),
    "ffn_hidden": (10_000_000, "the widest FFNs are about 100,000 wide"),
    "vocab": (100_000_000, "the largest vocabularies have about 256,000 tokens"),
    "seq_len": (100_000_000, "the longest trained context is about 10 million tokens"),
    "n_experts": (1_000_000, "the largest MoE models have a few hundred experts per layer"),
    "expert_ffn_hidden": (10_000_000, "the widest FFNs are about 100,000 wide"),
    "global_batch": (1_000_000_000, "a billion sequences per step; published runs use a few thousand"),
    "micro_batch": (1_000_000, "a million sequences per micro-batch"),
    "tp": (10_000_000, "a parallel degree is at most the GPU count"),
    "pp": (10_000_000, "a parallel degree is at most the GPU count"),
    "dp": (10_000_000, "a parallel degree is at most the GPU count"),
    "cp": (10_000_000, "a parallel degree is at most the GPU count"),
    "ep": (10_000_000, "a parallel degree is at most the GPU count"),
    "vp": (100_000, "virtual stages are at most the layers"),
    "tokens_per_step": (1e12, "a trillion tokens per step; published runs use a few million"),
    "top": (1_000_000, "a million layouts"),
    "days": (36_500, "100 years of training"),
    "trials": (1_000_000, "a million Monte Carlo trials"),
    "tokens": (1e16, "about 300 times the largest published training run, 36T tokens (Qwen3)"),
}
# counts and sizes with a positive lower bound other than 1 (name -> (least allowed, why))
MIN: dict[str, tuple[float, str]] = {
    "nic_gbps": (1.0, "the slowest Ethernet NIC is 1 Gb/s"),
}


def _num(x: float) -> str:
    return f"{x:,.0f}" if abs(x) < 1e12 else f"{x:.3g}"


def why(name: str) -> Optional[str]:
    """'at most N (reason)' for a bounded name, else None."""
    b = MAX.get(name)
    return f"at most {_num(b[0])} ({b[1]})" if b else None


def check_number(flag: str, value: Any, name: Optional[str] = None, *, integer: bool = False,
                 minimum: Optional[float] = None, allow_zero: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number within the bounds of ``name`` (default: the flag's name
    without dashes). ``minimum`` overrides the positive lower bound; None values pass (not given)."""
    if value is None:
        return
    key = name or flag.lstrip("-").replace("-", "_")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{flag} must be {'a whole number' if integer else 'a number'}, got {short(value)}")
    if not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, got {value}")
    if integer and not isinstance(value, numbers.Integral) and not float(value).is_integer():
        raise UserError(f"{flag} must be a whole number, got {short(value)}")
    lo, lo_why = MIN.get(key, (minimum, ""))
    if minimum is not None:
        lo, lo_why = minimum, ""
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"{flag} must be positive, got {short(value)}")
    if lo is not None and value < lo:
        raise UserError(f"{flag} must be at least {lo:g}{f' ({lo_why})' if lo_why else ''}, got {short(value)}")
    hi = MAX.get(key)
    if hi and value > hi[0]:
        shown = _num(value) if isinstance(value, float) else short(value)
        raise UserError(f"{flag} {shown} is more than megacluster accepts: {why(key)}")
