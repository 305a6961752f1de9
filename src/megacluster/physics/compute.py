"""Kernel times from the accelerator's efficiency model.

* GEMM: FLOPs / (peak x efficiency(shape)). The efficiency is the GPU's large-GEMM efficiency times
  1 / (1 + d0/d) for the smallest GEMM dimension d (tiles and waves fill badly when a dimension is small;
  d0 = the GPU's ``gemm_half_dim``), or the memory roofline if that is slower.
* Flash attention: FLOPs / (bf16 peak x the GPU's attention efficiency); backward does 2.5x forward
  FLOPs (it recomputes QK^T: 5 matmuls against 2; Dao 2023, FlashAttention-2 section 3).
* Memory-bound ops (norms, activations, residual adds, casts, optimizer): bytes / (HBM bandwidth x
  efficiency).

A power cap below TDP lowers sustained clocks. Dynamic power is ~ f V^2; at the high end of the V/f curve
V ~ f (power ~ f^3), but a board already power-saturated at TDP (as Hopper is in GEMMs: its sustained clock
is ~1.45 GHz against a 1.98 GHz boost, ml-engineering MSMF table) sits near the voltage floor, where power
~ f. We take the middle, clocks ~ (cap / TDP)^(1/2): 0.85 at 500 W on a 700 W H100. Cross-check (not a
fit): torchtitan FSDP+compile Llama 3.1 8B at 500 W reaches 39% MFU, fms-fsdp FSDP+compile Llama 2 7B
at 700 W 46% (shared facts/runtime-anchors.md): ratio 0.85.
All functions broadcast over numpy arrays.
"""

from __future__ import annotations

import numpy as np

from ..specs import GPUSpec


def clock_factor(gpu: GPUSpec) -> float:
    """Sustained-clock fraction under a power cap (1.0 without one)."""
    if gpu.power_cap_w and gpu.power_cap_w < gpu.tdp_w:
        return (gpu.power_cap_w / gpu.tdp_w) ** 0.5
    return 1.0


def gemm_rate(gpu: GPUSpec, fp8=False):
    """Best sustained GEMM FLOP/s for large shapes (bf16, or fp8 where ``fp8`` is true)."""
    bf16 = gpu.peak("bf16") * gpu.gemm_efficiency
    f8 = gpu.peak("fp8") * (gpu.gemm_efficiency_fp8 or gpu.gemm_efficiency)
    return np.where(fp8, f8, bf16) * clock_factor(gpu)


def gemm_time(gpu: GPUSpec, m, n, k, fp8=False, count=1.0):
    """Seconds for ``count`` GEMMs of (m x k) @ (k x n): compute with shape efficiency, or HBM roofline."""
    m, n, k = (np.asarray(x, dtype=float) for x in (m, n, k))
    flops = 2.0 * m * n * k * count
    dmin = np.minimum(np.minimum(m, n), k)
    rate = gemm_rate(gpu, fp8) / (1.0 + gpu.gemm_half_dim / np.maximum(dmin, 1.0))
    elem = np.where(fp8, 1.0, 2.0)
    bytes_ = (m * k + k * n + m * n) * elem * count
    return np.maximum(flops / rate, bytes_ / hbm_rate(gpu))


def attention_time(gpu: GPUSpec, flops):
    """Seconds for flash-attention FLOPs (bf16 tensor cores)."""
    return np.asarray(flops, dtype=float) / (gpu.peak("bf16") * gpu.attention_efficiency * clock_factor(gpu))


def hbm_rate(gpu: GPUSpec) -> float:
    """Sustained HBM bytes/s."""
    return gpu.hbm_tbs * 1e12 * gpu.hbm_efficiency


def memory_time(gpu: GPUSpec, bytes_):
    """Seconds to stream ``bytes_`` through HBM (memory-bound kernels)."""
    return np.asarray(bytes_, dtype=float) / hbm_rate(gpu)
