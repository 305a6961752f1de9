"""Fits of microbenchmark points to the step model's own shapes (plain numpy; seconds, FLOPs, bytes).

* GEMM (``physics/compute.py: gemm_time``): t = 2MNK / (R x K/(K+K0) x fill) + launch, i.e.
  t = (2MNK/fill) / R + (2MN/fill) K0 / R + launch: linear in (1/R, K0/R, launch), solved by non-negative
  least squares on relative error. R (FLOP/s) / peak is the sustained GEMM efficiency.
* Attention (``attention_time``): forward t = F (s + s0) / (R_a s) = F / R_a + (F / s) s0 / R_a (F the causal
  forward FLOPs); backward does 2.5 F at ``ratio`` x the forward rate.
* Bandwidth: bytes / best time (a stream is bandwidth-bound by construction).
* Collectives: t = a x latency + b x S / B with the ring factors the step model uses (``physics/comm.py``):
  all-reduce a = 2(n-1), b = 2(n-1)/n; all-gather / reduce-scatter a = n-1, b = (n-1)/n (S the gathered
  buffer); all-to-all a = 1, b = (n-1)/n; p2p a = 1, b = 1.
"""

from __future__ import annotations

import numpy as np


def _nnls(A: np.ndarray, y: np.ndarray, iters: int = 200) -> np.ndarray:
    """Non-negative least squares min |Ax - y| (x >= 0) by active-set elimination on a small system."""
    free = np.ones(A.shape[1], dtype=bool)
    x = np.zeros(A.shape[1])
    for _ in range(iters):
        if not free.any():
            break
        sol, *_ = np.linalg.lstsq(A[:, free], y, rcond=None)
        if (sol >= 0).all():
            x[:] = 0.0
            x[free] = sol
            return x
        idx = np.flatnonzero(free)
        free[idx[np.argmin(sol)]] = False
    return x


def _rel(A, y):
    """Rows scaled by 1/y: least squares on relative error (every point counts alike)."""
    y = np.asarray(y, dtype=float)
    return A / y[:, None], np.ones_like(y)


def wave_fill(m, n, tile: tuple[int, int], units: int):
    """Share of the last wave's tiles doing work (``compute.gemm_time``'s fill), 1 for one-element tiles."""
    m, n = np.asarray(m, dtype=float), np.asarray(n, dtype=float)
    tm, tn = tile
    tiles = np.ceil(m / tm) * np.ceil(n / tn)
    waves = np.ceil(tiles / units)
    return (m * n) / (waves * units * tm * tn)


def fit_gemm(points, tile=(1, 1), units=1) -> dict[str, float]:
    """``points``: rows (m, n, k, seconds). Returns rate_flops (R), k0, launch_s and the fit's error."""
    p = np.asarray(points, dtype=float)
    m, n, k, t = p.T
    fill = wave_fill(m, n, tile, units)
    A = np.stack([2 * m * n * k / fill, 2 * m * n / fill, np.ones_like(t)], axis=1)
    Ar, yr = _rel(A, t)
    inv_r, k0_over_r, launch = _nnls(Ar, yr)
    inv_r = max(inv_r, 1e-30)
    pred = A @ np.array([inv_r, k0_over_r, launch])
    return {"rate_flops": 1.0 / inv_r, "k0": k0_over_r / inv_r, "launch_s": launch,
            "mape": float(np.mean(np.abs(pred / t - 1.0))), "points": int(len(t))}


def gemm_predict(fit: dict, m, n, k, tile=(1, 1), units=1):
    """Seconds the fitted GEMM model gives (for tests and reports)."""
    fill = wave_fill(m, n, tile, units)
    k = np.asarray(k, dtype=float)
    return 2.0 * np.asarray(m) * n * k / (fit["rate_flops"] * k / (k + fit["k0"]) * fill) + fit["launch_s"]


def fit_attention(points) -> dict[str, float]:
    """``points``: rows (seq, causal forward FLOPs, forward seconds, backward seconds). Returns the forward
    rate (FLOP/s at long sequences), s0 (tokens) and the backward/forward rate ratio."""
    p = np.asarray(points, dtype=float)
    s, F, tf, tb = p.T
    A = np.stack([F, F / s], axis=1)
    Ar, yr = _rel(A, tf)
    inv_r, s0_over_r = _nnls(Ar, yr)
    inv_r = max(inv_r, 1e-30)
    rate, s0 = 1.0 / inv_r, s0_over_r / inv_r
    if s0 > 10.0 * s.max():
        # no rate plateau within the lengths measured (noisy or too few points): one length-independent rate
        rate, s0 = float(F.sum() / tf.sum()), 0.0
    fwd_rate_at = rate * s / (s + s0)
    ratio = float(np.median((2.5 * F / fwd_rate_at) / tb))
    pred = F / fwd_rate_at
    return {"rate_flops": rate, "half_seq": s0, "bwd_ratio": ratio,
            "mape": float(np.mean(np.abs(pred / tf - 1.0))), "points": int(len(s))}


def fit_bandwidth(points) -> dict[str, float]:
    """``points``: rows (bytes moved, seconds). The sustained rate is the median of the largest half (bytes/s)."""
    p = np.asarray(points, dtype=float)
    b, t = p.T
    big = b >= np.median(b)
    return {"bytes_per_s": float(np.median(b[big] / t[big])), "points": int(len(b))}


#: (latency factor, bandwidth factor) of each collective over n ranks, as physics/comm.py times them
def collective_factors(op: str, n: int) -> tuple[float, float]:
    if op == "all_reduce":
        return 2.0 * (n - 1), 2.0 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return float(n - 1), (n - 1) / n
    if op == "all_to_all":
        return 1.0, (n - 1) / n
    if op == "p2p":
        return 1.0, 1.0
    raise ValueError(f"unknown collective {op!r}")


#: the collectives the step model counts its communication in (all-gather units: TP, ZeRO-3; an all-reduce
#: is one of each): a tier's latency and bandwidth are fitted to these where they were measured
UNIT_OPS = ("all_gather", "reduce_scatter")


def fit_collectives(points, n: int, ops=None, backend_cpu: bool = False) -> dict[str, float]:
    """``points``: rows (op, bytes, seconds[, backend CPU seconds]) over ``n`` ranks. One latency (s per ring
    step) and one bandwidth (bytes/s per rank) for the tier, least squares on relative error, over the rows of
    ``ops`` (all when None or when none of them was measured). ``backend_cpu``: each row costs its seconds
    plus the backend threads' CPU seconds (a CPU whose every core runs a rank: that CPU time is taken from
    the ranks' compute, not hidden beside it)."""
    rows = [r for r in points if ops is None or r[0] in ops] or list(points)
    rows = [(*collective_factors(r[0], n), float(r[1]),
             float(r[2]) + (float(r[3]) if backend_cpu and len(r) > 3 else 0.0)) for r in rows]
    a, f, b, t = (np.array(x) for x in zip(*rows))
    A = np.stack([a, f * b], axis=1)
    Ar, yr = _rel(A, t)
    lat, inv_bw = _nnls(Ar, yr)
    inv_bw = max(inv_bw, 1e-30)
    pred = A @ np.array([lat, inv_bw])
    return {"latency_s": lat, "bytes_per_s": 1.0 / inv_bw, "ranks": n, "ops": sorted({r[0] for r in points if
            ops is None or r[0] in ops}) if ops else None, "backend_cpu": bool(backend_cpu),
            "mape": float(np.mean(np.abs(pred / t - 1.0))), "points": int(len(t))}


def fit_overhead(measured, other, scaled) -> dict[str, float]:
    """Refinement from measured runs: measured_i = other_i + x scaled_i + b, for a fixed per-step overhead b
    >= 0 and a factor x >= 0 on the ``scaled`` part of each prediction (seconds). With one run only one of the
    two can move: b where the run was slower than predicted, x where it was faster."""
    y, o, s = (np.asarray(v, dtype=float) for v in (measured, other, scaled))
    if len(y) == 1:
        gap = float(y[0] - o[0] - s[0])
        if gap >= 0 or s[0] <= 0:
            return {"factor": 1.0, "overhead_s": max(gap, 0.0)}
        return {"factor": max(0.0, 1.0 + gap / s[0]), "overhead_s": 0.0}
    A = np.stack([s, np.ones_like(s)], axis=1)
    Ar, yr = _rel(A, y)
    x, b = _nnls(Ar, (y - o) / y)
    return {"factor": float(x), "overhead_s": float(b)}
