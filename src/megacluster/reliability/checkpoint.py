"""Checkpoint size and cost: bytes from the parameter count, precision and optimizer; write and read times
from storage bandwidth (aggregate, per node) or from host-memory / peer copies; the training stall.

Modes:
  ``sync``    training stops while every shard is written to storage (stall = write time).
  ``async``   training stops only for the GPU -> host-memory copy; the write to storage runs in the
              background and the checkpoint counts once it is durable (lag = write time).
  ``memory``  in-memory / peer copies (Gemini, Wang et al. SOSP 2023): GPU -> host copy, then a copy to a
              peer node's memory over the back-end NIC; restore reads from the peer. Assumes a peer copy
              survives a single-node failure.
"""

from __future__ import annotations

import math
from typing import Literal, Optional

from pydantic import BaseModel

from ..errors import UserError, short
from ..specs import ModelSpec
from .profiles import Profile, load_profile

Mode = Literal["sync", "async", "memory"]

# bytes per parameter of the stored weights by training precision. fp8 training keeps bf16 weights in its
# checkpoint (fp8 copies are transient).
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 2.0}
# optimizer state per parameter, fp32: Adam m and v (8), SGD momentum (4). Mixed-precision training adds a
# 4-byte fp32 master copy (ZeRO, Rajbhandari et al. 2020: 16 bytes/param with 2-byte gradients, which a
# checkpoint does not store).
OPTIMIZER_BYTES = {"adam": 8.0, "sgd": 4.0, "none": 0.0}


class CheckpointCost(BaseModel):
    """Size and time of one checkpoint of a job. Bytes, seconds, GB/s (1e9 bytes/s)."""

    params: float
    bytes_per_param: float
    bytes_total: float
    bytes_per_gpu: float
    mode: str
    write_gbs: float
    write_s: float
    read_s: float
    stall_s: float
    durable_lag_s: float


def bytes_per_param(precision: str = "bf16", optimizer: str = "adam", weights_only: bool = False) -> float:
    """Checkpoint bytes per parameter: weights (+ fp32 master copy when training below fp32) + optimizer
    state. bf16 + Adam = 2 + 4 + 8 = 14 (BLOOM's 2.3 TB for 176B is about 13)."""
    if precision not in WEIGHT_BYTES:
        raise UserError(f"unknown precision {short(precision)}; use one of {', '.join(WEIGHT_BYTES)}")
    if optimizer not in OPTIMIZER_BYTES:
        raise UserError(f"unknown optimizer {short(optimizer)}; use one of {', '.join(OPTIMIZER_BYTES)}")
    w = WEIGHT_BYTES[precision]
    if weights_only:
        return w
    master = 4.0 if precision != "fp32" else 0.0
    return w + master + OPTIMIZER_BYTES[optimizer]


def checkpoint_cost(model: "ModelSpec | float | int | None", n_gpus: int, profile: "str | Profile" = "llama3-h100",
                    precision: str = "bf16", mode: Optional[str] = None, optimizer: str = "adam",
                    weights_only: bool = False, shards: Optional[int] = None,
                    write_gbs: Optional[float] = None, read_gbs: Optional[float] = None,
                    node_gbs: Optional[float] = None) -> CheckpointCost:
    """Cost of one checkpoint of ``model`` (a ModelSpec, a parameter count, or None for the profile's
    reference job) trained on ``n_gpus`` GPUs.

    ``shards``: ranks writing distinct pieces (default: every GPU, as with a sharded optimizer and a
    distributed checkpoint). Storage rate = min(aggregate storage bandwidth, writer nodes x per-node
    bandwidth); bandwidths in GB/s override the profile's.
    """
    prof = load_profile(profile)
    if n_gpus <= 0:
        raise UserError(f"GPU count must be positive, got {n_gpus}")
    if model is None:
        params = prof.checkpoint.params.value
    elif isinstance(model, ModelSpec):
        params = float(model.params_total)
    else:
        params = float(model)
    if params <= 0:
        raise UserError(f"parameter count must be positive, got {params}")
    mode = mode or prof.checkpoint.mode.value
    if mode not in ("sync", "async", "memory"):
        raise UserError(f"unknown checkpoint mode {short(mode)}; use sync, async or memory")
    st = prof.storage
    wg = write_gbs if write_gbs is not None else st.write_gbs.value
    rg = read_gbs if read_gbs is not None else st.read_gbs.value
    ng = node_gbs if node_gbs is not None else st.node_gbs.value
    for label, v in (("write bandwidth", wg), ("read bandwidth", rg), ("per-node bandwidth", ng)):
        if v <= 0:
            raise UserError(f"{label} must be positive, got {v} GB/s")
    bpp = bytes_per_param(precision, optimizer, weights_only)
    total = params * bpp
    writers = min(shards or n_gpus, n_gpus)
    if writers <= 0:
        raise UserError(f"shards must be positive, got {shards}")
    per_gpu = total / writers
    writer_nodes = math.ceil(writers / prof.gpus_per_node)
    all_nodes = math.ceil(n_gpus / prof.gpus_per_node)
    write_rate = min(wg, writer_nodes * ng) * 1e9
    read_rate = min(rg, all_nodes * ng) * 1e9
    write_s = total / write_rate
    host_copy_s = per_gpu / (st.host_copy_gbs.value * 1e9)
    if mode == "sync":
        stall, lag, read_s = write_s, 0.0, total / read_rate
    elif mode == "async":
        stall, lag, read_s = host_copy_s, write_s, total / read_rate
    else:
        peer_s = per_gpu / (st.peer_gbs.value * 1e9)
        stall, lag, read_s = host_copy_s, peer_s, peer_s
    return CheckpointCost(params=params, bytes_per_param=bpp, bytes_total=total, bytes_per_gpu=per_gpu, mode=mode,
                          write_gbs=write_rate / 1e9, write_s=write_s, read_s=read_s, stall_s=stall,
                          durable_lag_s=lag)
