"""Leave-one-family-out scores of the step model over the team's runs and the `more` runs.

    python benchmarks/cross_validation.py [--markdown]

The step model's constants are not fitted by a program: each is counted from a stack's code or read from a
source (stacks.yaml, gpus.yaml). "Cross-validated" therefore means: a family of runs (one source's runs,
megacluster.run_family.family_key) is predicted with every constant whose ONLY source is that same family
and that was chosen or checked against that family's measured throughput (stacks.yaml ``single_source`` with
``basis: throughput``) reverted to the value it would have without that source. The strict figure also
reverts the constants that only that family's source describes (``basis: setup``: what the system does, e.g.
which attention kernel or pipeline schedule it ran; an input like the run's layout, but one that no other
source confirms). A constant read from another family's paper, from a data sheet, or counted from code stays
as it is. The script prints the in-set MAPE (the model as it is, over both sets), the `more` set's MAPE, both
cross-validated MAPEs and their gaps, each family's MAPE, and the constants that rest on a single family.
"""

from __future__ import annotations

import argparse
import contextlib
from collections import defaultdict

import numpy as np

from megacluster import catalog
from megacluster.errors import UserError
from megacluster.run_family import family_key, matches
from megacluster.validate import load_runs, validate_runs

SETS = ("published", "more")


def single_source_constants() -> list[dict]:
    """Every stacks.yaml ``single_source`` entry, with its stack id."""
    out = []
    for st in catalog.load("stacks")["stacks"]:
        for e in st.get("single_source") or []:
            out.append({"stack": st["id"], **e})
    return out


@contextlib.contextmanager
def reverted(entries: list[dict]):
    """The catalog's stack constants with ``entries`` set to their ``revert`` values (restored on exit)."""
    stacks = {st["id"]: st for st in catalog.load("stacks")["stacks"]}
    saved = []
    try:
        for e in entries:
            for v in e["variants"]:
                variant = stacks[e["stack"]]["by_generation"][v]
                saved.append((variant, e["constant"], e["constant"] in variant, variant.get(e["constant"])))
                if e["revert"] is None:
                    variant.pop(e["constant"], None)
                else:
                    variant[e["constant"]] = e["revert"]
        yield
    finally:
        for variant, key, had, value in reversed(saved):
            if had:
                variant[key] = value
            else:
                variant.pop(key, None)


def cited_families(families) -> dict[str, list[str]]:
    """For each stack, the families (with an arXiv id) whose paper its source text cites."""
    out = {}
    for st in catalog.load("stacks")["stacks"]:
        text = str(st.get("source", ""))
        out[st["id"]] = sorted(f for f in families if f.startswith("arxiv:") and f.split(":", 1)[1] in text)
    return out


def _errors(runs: list[dict]) -> dict[str, float]:
    """Predicted/measured - 1 per run id (runs that cannot be predicted are left out)."""
    try:
        res = validate_runs(runs)
    except UserError:
        return {}
    return {r.id: r.error for r in res["runs"]}


def _mape(errs) -> float:
    e = np.abs(list(errs))
    return float(e.mean()) if len(e) else float("nan")


def cross_validate(strict: bool = False) -> dict:
    """In-set and leave-one-family-out errors per run, grouped by family; ``strict`` also reverts the
    single-family constants whose basis is the source's description of its setup."""
    runs = []
    for name in SETS:
        for r in load_runs(name):
            runs.append((name, family_key(r), r))
    in_set = _errors([r for _, _, r in runs])
    consts = single_source_constants()
    fams: dict[str, dict] = {}
    for name, fam, r in runs:
        f = fams.setdefault(fam, {"set": name, "runs": []})
        f["runs"].append(r)
    cv: dict[str, float] = {}
    for fam, f in fams.items():
        own = [e for e in consts if matches(fam, e["family"])
               and (strict or e.get("basis", "throughput") == "throughput")]
        f["reverted"] = [f"{e['stack']}.{e['constant']}" for e in own]
        if own:
            with reverted(own):
                cv.update(_errors(f["runs"]))
        else:
            cv.update({r["id"]: in_set[r["id"]] for r in f["runs"] if r["id"] in in_set})
        f["in_set"] = [in_set[r["id"]] for r in f["runs"] if r["id"] in in_set]
        f["cv"] = [cv[r["id"]] for r in f["runs"] if r["id"] in cv]
    by_set = defaultdict(list)
    for name, _, r in runs:
        if r["id"] in in_set:
            by_set[name].append(in_set[r["id"]])
    return {"families": fams, "in_set": in_set, "cv": cv, "by_set": by_set, "single_source": consts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print the summary as a markdown table")
    args = ap.parse_args()
    res = cross_validate()
    strict = cross_validate(strict=True)
    ins, cv = res["in_set"], res["cv"]
    m_in, m_cv = _mape(ins.values()), _mape(cv.values())
    m_strict = _mape(strict["cv"].values())
    m_team, m_more = _mape(res["by_set"]["published"]), _mape(res["by_set"]["more"])
    if args.markdown:
        print("| figure | runs | MAPE |\n|---|---|---|")
        print(f"| in-set (team set + `more`, the model as it is) | {len(ins)} | {m_in:.2%} |")
        print(f"| team set | {len(res['by_set']['published'])} | {m_team:.2%} |")
        print(f"| out-of-set (`more`: published runs outside the team's set) | {len(res['by_set']['more'])} | {m_more:.2%} |")
        print(f"| leave-one-family-out (single-family constants reverted) | {len(cv)} | {m_cv:.2%} |")
        print(f"| gap (cross-validated - in-set) | | {m_cv - m_in:+.2%} |")
        print(f"| strict leave-one-family-out (also single-source setup constants reverted) | {len(strict['cv'])} | "
              f"{m_strict:.2%} (gap {m_strict - m_in:+.2%}) |")
        return
    print(f"in-set MAPE (both sets, {len(ins)} runs):           {m_in:7.2%}")
    print(f"  team set ({len(res['by_set']['published'])} runs):                     {m_team:7.2%}")
    print(f"  out-of-set, `more` ({len(res['by_set']['more'])} runs):              {m_more:7.2%}")
    print(f"cross-validated MAPE (leave-one-family-out):     {m_cv:7.2%}")
    print(f"gap (cross-validated - in-set):                  {m_cv - m_in:+7.2%}")
    print(f"strict cross-validated MAPE (setup too):         {m_strict:7.2%}  (gap {m_strict - m_in:+.2%})")
    print()
    print(f"{'family':58s} {'set':9s} {'runs':>4s} {'in-set':>8s} {'cv':>8s} {'strict':>8s}  reverted (strict)")
    for fam, f in sorted(res["families"].items(), key=lambda kv: -_mape(kv[1]["cv"])):
        sf = strict["families"][fam]
        print(f"{fam[:58]:58s} {f['set']:9s} {len(f['runs']):4d} {_mape(f['in_set']):8.2%} {_mape(f['cv']):8.2%} "
              f"{_mape(sf['cv']):8.2%}  {', '.join(sf['reverted']) or '-'}")
    print()
    print("stacks whose source text cites validation families' papers (arXiv ids):")
    for sid, fams in cited_families(res["families"]).items():
        flag = "  <- one family only" if len(fams) == 1 else ""
        print(f"  {sid}: {', '.join(fams) or '-'}{flag}")
    print()
    print("constants justified by a single family's source (stacks.yaml single_source):")
    for e in res["single_source"]:
        print(f"  {e['stack']}.{e['constant']} ({', '.join(e['variants'])}): only source {e['family']} "
              f"({e.get('basis', 'throughput')}); reverted to {e['revert']!r} for that family")


if __name__ == "__main__":
    main()
