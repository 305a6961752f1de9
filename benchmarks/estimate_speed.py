"""How fast the step model runs: single ``estimate`` calls per second, and layouts per second through the
vectorised ``estimate_arrays`` (what the planner's search uses). Prints figures; asserts nothing.

    python benchmarks/estimate_speed.py [--model gpt3-175b] [--gpu h100-sxm] [--gpus 1024] [--seconds 2]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import numpy as np

from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.estimate import estimate, estimate_arrays
from megacluster.specs import Layout, StackSpec


def rate(fn, seconds: float) -> tuple[float, int]:
    """(calls per second, calls) of ``fn`` run repeatedly for about ``seconds``."""
    fn()                                    # warm-up (imports, caches)
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt, n


def layout_grid(n_gpus: int, size: int) -> dict[str, np.ndarray]:
    """About ``size`` layouts of ``n_gpus`` GPUs as arrays (degrees, micro-batch, recompute, ZeRO, fp8)."""
    rows = []
    for tp, pp, mb, rc, z, f8, vp in itertools.product((1, 2, 4, 8), (1, 2, 4, 8, 16), (1, 2, 4, 8), (0, 1, 2),
                                                       (0, 1, 2, 3), (0, 1), (1, 2, 3)):
        if n_gpus % (tp * pp) or (vp > 1 and pp == 1):
            continue
        rows.append((tp, pp, n_gpus // (tp * pp), mb, rc, z, f8, vp))
    a = np.array(rows, dtype=np.int64)
    a = np.tile(a, (max(1, -(-size // len(a))), 1))[:size]
    tp, pp, dp, mb, rc, z, f8, vp = a.T
    gb = dp * mb * pp * 8
    return {"tp": tp, "pp": pp, "dp": dp, "cp": np.ones_like(tp), "ep": np.ones_like(tp), "vp": vp,
            "micro_batch": mb, "global_batch": gb, "seq_len": np.full_like(tp, 2048),
            "sequence_parallel": tp > 1, "recompute": rc, "zero": z, "fp8": f8.astype(bool)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt3-175b")
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--gpus", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = ap.parse_args()

    model, cluster, stack = catalog.model(args.model), make_cluster(args.gpu, args.gpus), StackSpec()
    layout = Layout(tp=8, pp=8, dp=args.gpus // 64, global_batch=1536, seq_len=2048, micro_batch=1)
    print(f"step model speed: {model.name} on {args.gpus:,} x {args.gpu}; Python {platform.python_version()}, "
          f"numpy {np.__version__}, {platform.machine()}")
    r, n = rate(lambda: estimate(model, cluster, layout, stack), args.seconds)
    print(f"  estimate() with layout checks:    {r:10,.0f} estimates/s  ({1e3 / r:.2f} ms each, {n:,} calls)")
    r, n = rate(lambda: estimate(model, cluster, layout, stack, check=False), args.seconds)
    print(f"  estimate() without layout checks: {r:10,.0f} estimates/s  ({1e3 / r:.2f} ms each, {n:,} calls)")
    for size in (1, 1_000, 10_000, 100_000):
        arrays = layout_grid(args.gpus, size)
        calls, n = rate(lambda: estimate_arrays(model, cluster, stack, arrays), args.seconds)
        print(f"  estimate_arrays(), {size:>7,} layouts per call: {calls * size:12,.0f} layouts/s  "
              f"({1e3 / calls:.2f} ms per call)")


if __name__ == "__main__":
    main()
