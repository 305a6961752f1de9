"""Print the validation against published runs as markdown (the README's validation table).

    python benchmarks/validation_table.py [--runs FILE] > table.md
    python benchmarks/validation_table.py --runs more     # the published runs outside the team's set
"""

from __future__ import annotations

import argparse
import time

from megacluster.report.validation_view import markdown
from megacluster.validate import load_runs, validate_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default=None, help="runs file, or a catalog set: published (default) or more")
    args = ap.parse_args()
    t0 = time.perf_counter()
    result = validate_runs(load_runs(args.runs))
    dt = time.perf_counter() - t0
    s = result["summary"]["all"]
    print(markdown(result))
    print()
    print(f"{s['n']} runs predicted in {dt:.1f} s: MAPE {s['mape']:.2%}, worst {s['max_abs_error']:.1%} "
          f"(error = predicted / measured tokens per second per GPU - 1).")
    cov = result["intervals"]["coverage"]["all"]
    print(f"80% prediction interval (leave-family-out): {cov['coverage']:.1%} of runs inside, median half-width "
          f"{cov['median_half_width']:.1%}.")
    mem = result["memory"]
    if mem:
        print(f"memory per GPU against {mem['n']} published peaks: MAPE {mem['mape']:.1%}, "
              f"worst {mem['max_abs_error']:.1%}.")


if __name__ == "__main__":
    main()
