"""Peak memory per GPU against the figures the out-of-set runs publish (``measured.other.peak_memory_gb``).

    PYTHONPATH=src python benchmarks/memory_more.py [--runs more]

``megacluster validate`` scores memory only where a run gives ``peak_memory_gib`` (torchtitan's allocator peak,
reserved, GiB). The ``more`` set's sources publish other figures, kept as ``peak_memory_gb``: Zero Bubble's
Table 4/6 memory rows (GB), MLPerf logs' ``max_memory_usage``. What each counts (allocated or reserved memory,
GB or GiB, with or without the CUDA context) is not the same, so this prints the comparison for reading, by
family, and is not a validation bar. The prediction is the step model's at the layout and micro-batch that
validate predicts the run with (its ``memory_gib``, which holds the stack's ``reserved_gib`` too).
"""

from __future__ import annotations

import argparse
import statistics

from megacluster.run_family import family_key
from megacluster.validate import load_runs, published_peak_memory_gib, validate_runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="more", help="runs file, or a catalog set (default: more)")
    args = ap.parse_args()
    runs = load_runs(args.runs)
    by_id = {r["id"]: r for r in runs}
    result = validate_runs(runs)
    rows = []
    for res in result["runs"]:
        ref = published_peak_memory_gib(by_id[res.id], "peak_memory_gb")
        if ref is not None:
            rows.append((family_key(by_id[res.id]), res.id, res.layout, res.memory_gib, ref))
    if not rows:
        print("no run gives peak_memory_gb")
        return
    print("| family | run | layout | predicted GiB | published GB | predicted / published - 1 |")
    print("|---|---|---|---:|---:|---:|")
    for fam, rid, lay, pred, ref in rows:
        print(f"| {fam[:40]} | {rid} | {lay} | {pred:.1f} | {ref:.1f} | {pred / ref - 1:+.1%} |")
    print()
    fams: dict[str, list[float]] = {}
    for fam, _, _, pred, ref in rows:
        fams.setdefault(fam, []).append(pred / ref - 1)
    for fam, errs in sorted(fams.items()):
        print(f"{fam[:60]}: {len(errs)} runs, mean {statistics.mean(errs):+.1%}, "
              f"mean |error| {statistics.mean(abs(e) for e in errs):.1%}")
    errs = [pred / ref - 1 for *_, pred, ref in rows]
    print(f"all: {len(errs)} runs, mean {statistics.mean(errs):+.1%}, "
          f"mean |error| {statistics.mean(abs(e) for e in errs):.1%} (figures of different kinds; see the docstring)")


if __name__ == "__main__":
    main()
