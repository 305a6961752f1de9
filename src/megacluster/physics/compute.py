"""Kernel times from the accelerator's efficiency model.

* GEMM: FLOPs / (peak x efficiency(shape)) + a fixed launch time, or the memory roofline if slower.
  efficiency = the GPU's large-GEMM efficiency x K/(K + K0) (each output tile pays a fill/epilogue cost
  worth K0 inner-dimension elements) x wave fill (output tiles spread over the SMs in whole waves).
  A training linear layer (``linear_times``) runs three GEMMs: forward (K = d_in), data gradient
  (K = d_out) and weight gradient (K = tokens).
* Flash attention: FLOPs / (bf16 peak x efficiency(s)), efficiency = the GPU's causal-forward rate x
  s/(s + s0) for s query tokens per kernel; backward runs at ``attention_bwd_ratio`` of the forward rate and
  does 2.5x forward FLOPs (it recomputes QK^T: 5 matmuls against 2; Dao 2023, FlashAttention-2 section 3).
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
    """Seconds for ``count`` GEMMs of (m x k) @ (k x n), run as one grouped launch (their tiles share waves)."""
    m, n, k = (np.maximum(np.asarray(x, dtype=float), 1.0) for x in (m, n, k))
    flops = 2.0 * m * n * k * count
    k0 = gpu.gemm_k_overhead * np.where(fp8, 2.0, 1.0)     # fp8 halves the K-loop time per element
    tm, tn = gpu.gemm_tile
    tiles = np.ceil(m / tm) * np.ceil(n / tn) * count
    waves = np.ceil(tiles / gpu.sm_count)
    fill = (m * n * count) / (waves * gpu.sm_count * tm * tn)
    rate = gemm_rate(gpu, fp8) * (k / (k + k0)) * fill
    elem = np.where(fp8, 1.0, 2.0)
    bytes_ = (m * k + k * n + m * n) * elem * count
    return np.maximum(flops / rate, bytes_ / hbm_rate(gpu)) + gpu.gemm_launch_us * 1e-6


def linear_times(gpu: GPUSpec, tokens, d_in, d_out, fp8=False, count=1.0):
    """(forward, backward) seconds of ``count`` linear layers y = x W over ``tokens`` rows, W d_in x d_out:
    forward (tokens x d_out, K = d_in); backward = data gradient (tokens x d_in, K = d_out) + weight
    gradient (d_in x d_out, K = tokens)."""
    fwd = gemm_time(gpu, tokens, d_out, d_in, fp8, count)
    bwd = gemm_time(gpu, tokens, d_in, d_out, fp8, count) + gemm_time(gpu, d_in, d_out, tokens, fp8, count)
    return fwd, bwd


def attention_rate(gpu: GPUSpec, seq):
    """Causal flash-attention forward FLOP/s for ``seq`` query tokens per kernel (16-bit)."""
    s = np.maximum(np.asarray(seq, dtype=float), 1.0)
    length = s / (s + gpu.attention_half_seq)
    return gpu.peak("bf16") * gpu.attention_efficiency * clock_factor(gpu) * length


def attention_time(gpu: GPUSpec, flops, seq, backward=False):
    """Seconds for flash-attention FLOPs at ``seq`` query tokens per kernel."""
    rate = attention_rate(gpu, seq)
    if backward:
        rate = rate * gpu.attention_bwd_ratio
    return np.asarray(flops, dtype=float) / rate


def hbm_rate(gpu: GPUSpec) -> float:
    """Sustained HBM bytes/s."""
    return gpu.hbm_tbs * 1e12 * gpu.hbm_efficiency


def memory_time(gpu: GPUSpec, bytes_):
    """Seconds to stream ``bytes_`` through HBM (memory-bound kernels)."""
    return np.asarray(bytes_, dtype=float) / hbm_rate(gpu)
