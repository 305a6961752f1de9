"""Speed of the reliability Monte Carlo: 1,000 trials of a 100,000-GPU, 100-day campaign (target < 10 s on
2 cores), including the search for the best checkpoint interval. Prints figures; asserts nothing.

    python benchmarks/reliability_speed.py [--trials 1000] [--gpus 100000] [--days 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import time

from megacluster.reliability import simulate_reliability


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=100.0)
    ap.add_argument("--profile", default="llama3-h100")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    simulate_reliability(1024, 1, profile=a.profile, trials=10)  # imports, catalog load
    times = []
    for i in range(a.repeat):
        t0 = time.perf_counter()
        r = simulate_reliability(a.gpus, a.days, profile=a.profile, trials=a.trials, seed=i)
        times.append(time.perf_counter() - t0)
    attempts = r.interruptions_mean * a.trials
    print(f"reliability Monte Carlo: {a.trials:,} trials x {a.gpus:,} GPUs x {a.days:g} days, profile {a.profile}, "
          f"{os.cpu_count()} CPUs")
    print(f"  seconds per run: best {min(times):.2f}, all {', '.join(f'{t:.2f}' for t in times)} (target < 10)")
    print(f"  interruptions simulated per run: {attempts:,.0f} ({attempts / min(times) / 1e6:.1f} M/s)")
    print(f"  interruptions {r.interruptions_mean:.0f} per campaign, MTTF {r.mttf_hours * 60:.1f} min, "
          f"goodput {r.goodput_mean:.1%} (5%..95%: {r.goodput_p5:.1%}..{r.goodput_p95:.1%}), "
          f"wall clock {r.wall_clock_days_mean:.1f} days, checkpoint every {r.checkpoint_interval_minutes:.2f} min "
          f"(Daly {r.daly_minutes:.2f})")


if __name__ == "__main__":
    main()
