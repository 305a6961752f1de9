"""Sizing speed: wall time of ``megacluster size`` answers (``megacluster.sizing.size``) against the bar of
issue 19 (under 5 s for 100,000-GPU answers).

    python benchmarks/size_speed.py [--repeat N]

Prints, per question, the answer, the campaigns evaluated and the first (cold) and best of N wall times.
Times exclude Python start-up and imports. Not a test: the figures depend on the machine (and on the load of
the others sharing it).
"""

from __future__ import annotations

import os
import platform
import sys
import time

from rich.console import Console
from rich.table import Table

from megacluster.sizing import size

CASES = [
    ("Llama 3.1 405B, 15.6T tokens, 60 days: smallest cluster",
     dict(model="llama3.1-405b", tokens=15.6e12, gpu="h100-sxm", days=60)),
    ("Grok-3-scale compute (4.64e26 FLOP), 100 days: smallest cluster",
     dict(compute_flops=4.64e26, gpu="h100-sxm", days=100)),
    ("largest compute-optimal model on 100,000 H100 in 100 days",
     dict(gpu="h100-sxm", gpus=100_000, days=100)),
    ("Llama 3.1 405B on the H100s 150 MW feeds: how long",
     dict(model="llama3.1-405b", tokens=15.6e12, gpu="h100-sxm", max_mw=150)),
]


def main(argv: list[str]) -> None:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 2
    t = Table(title=f"megacluster size, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    for col in ("question", "answer", "campaigns", "first s", f"best of {repeat} s"):
        t.add_column(col, justify="left" if col in ("question", "answer") else "right")
    for label, kw in CASES:
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = size(**kw)
            times.append(time.perf_counter() - t0)
        t.add_row(label, f"{r.n_gpus:,} GPUs, {r.days:,.1f} days, {r.params_total / 1e9:,.0f}B, binding {r.binding}",
                  str(r.evaluated), f"{times[0]:.2f}", f"{min(times):.2f}")
    Console(width=160).print(t)


if __name__ == "__main__":
    main(sys.argv[1:])
