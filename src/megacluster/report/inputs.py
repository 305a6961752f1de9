"""Turn command-line flags (and an optional plan file) into specs: model, cluster, stack, layout.

Every bad value becomes a one-line :class:`UserError` naming the flag and what to use instead.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import ValidationError

from .. import catalog
from ..cluster import make_cluster
from ..errors import UserError, short
from ..limits import check_number
from ..specs import ClusterSpec, Layout, ModelSpec, StackSpec

RECOMPUTE_CHOICES = ("none", "selective", "full")
PRECISION_CHOICES = ("bf16", "fp16", "fp8")
DEFAULT_TOKENS_PER_STEP = 2 ** 22     # estimate's default global batch: about 4M tokens per step


def choice(flag: str, value: Optional[str], choices: tuple[str, ...]) -> Optional[str]:
    """``value`` if it is one of ``choices`` (or None), else a UserError suggesting the nearest."""
    if value is None or value in choices:
        return value
    close = difflib.get_close_matches(str(value).lower(), choices, n=1, cutoff=0.3)
    hint = f"; did you mean {short(close[0])}?" if close else ""
    raise UserError(f"unknown {flag} {short(value)}{hint} (choose {', '.join(choices)})")


def positive(flag: str, value: Any) -> None:
    """Refuse a value that is not a positive, finite number within its bound (:mod:`megacluster.limits`)."""
    check_number(flag, value, integer=isinstance(value, int))


@dataclass
class Plan:
    """What a plan file holds, as plain values (flags given on the command line override them)."""

    model: Any = None            # catalog id, path or ModelSpec
    gpu: Any = None              # catalog id or GPUSpec
    gpus: Optional[int] = None
    cluster: dict = field(default_factory=dict)      # fabric, nic_gbps, nics_per_node, gpus_per_node, nvlink_domain
    layout: dict = field(default_factory=dict)
    stack: dict = field(default_factory=dict)


def read_plan(path: Path | str) -> Plan:
    """Read a plan file (:func:`megacluster.plan_file.load_plan`, which checks it) into plain values."""
    from ..plan_file import load_plan

    p = load_plan(path)
    c = p.cluster
    return Plan(model=p.model, gpu=c.gpu, gpus=c.n_gpus,
                cluster={"fabric": c.fabric.id, "nic_gbps": c.node.nic_gbps, "nics_per_node": c.node.nics_per_node,
                         "gpus_per_node": c.node.gpus_per_node, "nvlink_domain": c.node.nvlink_domain},
                layout=p.layout.model_dump(), stack=p.stack.model_dump())


def resolve_model(model: Any) -> ModelSpec:
    if isinstance(model, ModelSpec):
        return model
    if not model:
        raise UserError("--model is required (a catalog id such as llama3.1-405b, or a config.json path)")
    return catalog.model(str(model))


def resolve_cluster(gpu: Any, gpus: Optional[int], fabric: Optional[str] = None, nic_gbps: Optional[float] = None,
                    nics_per_node: Optional[int] = None, gpus_per_node: Optional[int] = None,
                    nvlink_domain: Optional[int] = None) -> ClusterSpec:
    if gpu is None:
        raise UserError("--gpu is required (a catalog id such as h100-sxm; `megacluster catalog gpus` lists them)")
    if gpus is None:
        raise UserError("--gpus is required (the number of GPUs)")
    positive("--gpus", gpus)
    g = gpu if not isinstance(gpu, str) else catalog.gpu(gpu)
    return make_cluster(g, int(gpus), fabric=fabric, nic_gbps=nic_gbps, nics_per_node=nics_per_node,
                        gpus_per_node=gpus_per_node, nvlink_domain=nvlink_domain)


def resolve_stack(framework: Optional[str] = None, base: Optional[dict] = None, **flags: Any) -> StackSpec:
    """The stack a command runs with: ``base`` (a plan file's stack) overridden by the flags given (a
    StackSpec field each; None: not given)."""
    d = dict(base or {})
    d.update({k: v for k, v in {"framework": framework, **flags}.items() if v is not None})
    catalog.stack_constants(d.get("framework", "megatron"))       # unknown framework: nearest suggested
    try:
        return StackSpec(**d)
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, "stack")) from None


def default_global_batch(seq_len: int, unit: int, tokens: int = DEFAULT_TOKENS_PER_STEP) -> int:
    """The multiple of ``unit`` sequences closest to ``tokens`` tokens per step (at least one unit)."""
    return max(1, round(tokens / seq_len / unit)) * unit


def resolve_layout(model: ModelSpec, cluster: ClusterSpec, flags: dict[str, Any],
                   base: Optional[dict] = None) -> Layout:
    """A Layout from flags over a plan's layout (``base``) over the defaults: tp = pp = cp = ep = vp = 1,
    dp = GPUs / (tp pp cp), micro-batch 1, sequence length of the model, global batch of about 4M tokens,
    selective recompute, ZeRO-1, the chip's 16-bit format (bf16; fp16 on V100), sequence parallelism on."""
    d: dict[str, Any] = {k: v for k, v in (base or {}).items() if v is not None}
    d.update({k: v for k, v in flags.items() if v is not None})
    for k in ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch", "seq_len", "dp_replicate"):
        positive("--" + k.replace("_", "-"), d.get(k))
    if d.get("zero") is not None and not 0 <= d["zero"] <= 3:
        raise UserError(f"--zero must be 0, 1, 2 or 3 (3 = FSDP), got {d['zero']}")
    choice("--recompute", d.get("recompute"), RECOMPUTE_CHOICES)
    choice("--precision", d.get("precision"), PRECISION_CHOICES)
    for k in ("tp", "pp", "cp", "ep", "vp", "micro_batch"):
        d.setdefault(k, 1)
    d.setdefault("seq_len", model.seq_len)
    d.setdefault("precision", cluster.gpu.half_precision)
    if "dp" not in d:
        d["dp"] = max(1, cluster.n_gpus // (d["tp"] * d["pp"] * d["cp"]))
    if "global_batch" not in d:
        unit = d["dp"] * d["micro_batch"] * (d["pp"] if d["vp"] > 1 else 1)
        d["global_batch"] = default_global_batch(d["seq_len"], unit)
    d = {k: v for k, v in d.items() if k in Layout.model_fields}
    try:
        return Layout(**d)
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, "layout")) from None
