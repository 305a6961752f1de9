"""Regenerate the residual table the prediction intervals are drawn from (``catalog/data/residuals.json``):
predict every published run of ``runs.yaml`` and ``runs_more.yaml`` with the current step model and store
log(predicted / measured) with each run's family and features. Run it after any change to the step model or
the catalog (``tests/test_uncertainty.py`` fails while the table is stale); it prints the coverage of the
leave-family-out 80% intervals per run set.

    PYTHONPATH=src python benchmarks/residuals.py            # rewrite the table, print coverage
    PYTHONPATH=src python benchmarks/residuals.py --check    # exit 1 if the stored table is stale
"""

from __future__ import annotations

import argparse
import sys
import time

from megacluster.uncertainty import residual_table_text, write_residual_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only say whether the stored table is up to date")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.check:
        from megacluster.uncertainty import residual_path

        fresh = residual_table_text()
        ok = residual_path().read_text(encoding="utf-8") == fresh
        print(f"residual table {'up to date' if ok else 'STALE: run benchmarks/residuals.py'} "
              f"({time.perf_counter() - t0:.1f} s)")
        sys.exit(0 if ok else 1)
    path, rows = write_residual_table()
    print(f"{len(rows)} runs predicted, table written to {path} in {time.perf_counter() - t0:.1f} s")
    from megacluster.uncertainty import fit_widen_per_feature, loo_coverage, nested_loo_coverage

    print(f"calibrated widening: +{fit_widen_per_feature(rows):.2f} of the band per rare feature")

    for title, cov in (("", loo_coverage(rows)),
                       ("nested (the widening rate also refitted without each run's own family):\n",
                        nested_loo_coverage(rows))):
        print(title, end="")
        for name, s in cov.items():
            print(f"{name:>10}: {s['n']:3d} runs, coverage of the 80% interval {s['coverage']:.1%}, "
                  f"median half-width {s['median_half_width']:.1%}")

if __name__ == "__main__":
    main()
