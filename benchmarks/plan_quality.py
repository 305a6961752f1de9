"""Plan quality: for every published run (catalog/data/runs.yaml), search the same model, GPU count, global
batch, sequence length, precision and software stack, and print the speed-up of the searched best layout over
the published layout, both as the step model predicts them. The search must never lose (speed-up >= 1.0)
where the step model says the published layout fits; the "in space" column checks that the published layout
is one of the candidates the search enumerates, and "memory ignored" repeats the search with unlimited HBM
(so it may pick the published layout even where the step model says it does not fit). Then what the search
picks for Llama 3.1 405B on 16,384 H100 next to Meta's TP8 PP16 DP128.

    python benchmarks/plan_quality.py [--free-precision] [--cp-min-seq 8192]

``--free-precision`` also lets the search choose fp8 where the published run trained in 16 bits;
``--cp-min-seq`` searches context parallelism from that sequence length (default: the search's, 16K).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from megacluster import catalog, validate
from megacluster.cluster import make_cluster
from megacluster.errors import UserError
from megacluster.estimate import estimate
from megacluster.layout_check import layout_problems
from megacluster.search import CP_MIN_SEQ, build_space, layout_label, search
from megacluster.specs import Layout, StackSpec


RC = {"none": 0, "selective": 1, "full": 2}


def in_space(model, cluster, s, gb, micro_batch, cp_min_seq=CP_MIN_SEQ) -> bool:
    """Whether the published layout is one of the search's candidates (precision pinned to the run's)."""
    space = build_space(model, cluster, s["seq_len"], gb, gb, gb, {"precision": [s["precision"]]},
                        cp_min_seq=cp_min_seq)
    P, K = space.pairs, space.knobs
    row = dict(tp=s["tp"], pp=s["pp"], dp=s["dp"], cp=s.get("cp") or 1, ep=s.get("ep") or 1, vp=s.get("vp") or 1,
               micro_batch=micro_batch, global_batch=gb)
    hit = (P["tp"] == row["tp"])
    for k, v in row.items():
        hit = hit & (P[k] == v)
    knob = (K["recompute"] == RC[s["recompute"]]) & (K["zero"] == (s.get("zero") or 0)) & (
        K["fp8"] == (s["precision"] == "fp8"))
    return bool(hit.any() and knob.any())


def quality(free_precision: bool = False, cp_min_seq: int = CP_MIN_SEQ) -> list[dict]:
    rows = []
    for run in validate.load_runs():
        s = run["spec"]
        model, cluster, stack = validate.spec_parts(run)
        gb = validate._global_batch(s)          # the same global batch the validation uses
        pub = validate.predict_run(run)
        pins = {} if free_precision else {"precision": s["precision"]}
        t0 = time.perf_counter()
        try:
            res = search(model, cluster, global_batch=gb, seq_len=s["seq_len"], stack=stack, top=1, pins=pins,
                         cp_min_seq=cp_min_seq)
            best, err = res.best, ""
        except UserError as e:
            best, err = None, str(e)
        roomy = cluster.model_copy(update={"gpu": cluster.gpu.model_copy(update={"hbm_gib": 1e6})})
        free_mem = search(model, roomy, global_batch=gb, seq_len=s["seq_len"], stack=stack, top=1, pins=pins,
                          cp_min_seq=cp_min_seq).best
        pub_layout = Layout(tp=s["tp"], pp=s["pp"], dp=s["dp"], cp=s.get("cp") or 1, ep=s.get("ep") or 1,
                            vp=s.get("vp") or 1, micro_batch=pub.micro_batch, global_batch=gb, seq_len=s["seq_len"],
                            recompute=s["recompute"], zero=s.get("zero") or 0, precision=s["precision"])
        problems = layout_problems(model, cluster, pub_layout)
        inside = "invalid" if problems else "yes" if in_space(model, cluster, s, gb, pub.micro_batch,
                                                              cp_min_seq) else "NO"
        if inside == "NO" and (s.get("cp") or 1) > 1 and in_space(model, cluster, s, gb, pub.micro_batch, 1):
            inside = "cp pruned"          # CP below cp_min_seq: in the space with --cp-min-seq
        rows.append({"in_space": inside,
                     "problem": problems[0] if problems else "",
                     "speedup_no_memory": free_mem.tokens_per_s_per_gpu / pub.predicted,
                     "id": run["id"], "n_gpus": s["n_gpus"], "published": pub.layout, "published_fits": pub.fits,
                     "published_tps": pub.predicted, "searched": layout_label(best.layout) if best else err,
                     "search_tps": best.tokens_per_s_per_gpu if best else 0.0,
                     "speedup": best.tokens_per_s_per_gpu / pub.predicted if best else 0.0,
                     "seconds": time.perf_counter() - t0})
    return rows


def llama_405b(console: Console, cp_min_seq: int = CP_MIN_SEQ) -> None:
    model = catalog.model("llama3.1-405b")
    cluster = make_cluster("h100-sxm", 16384, fabric="roce")
    stack = StackSpec(framework="meta-internal")
    meta = Layout(tp=8, pp=16, dp=128, micro_batch=1, global_batch=2048, seq_len=8192, recompute="none",
                  zero=3, precision="bf16")
    t = Table(title="Llama 3.1 405B, 16,384 H100 (RoCE), global batch 2,048 x 8K, bf16, Meta's stack")
    for c in ("layout", "step s", "MFU", "tokens/s/GPU", "GiB/GPU", "fits"):
        t.add_column(c, justify="right" if c != "layout" else "left")
    e = estimate(model, cluster, meta, stack)
    t.add_row("Meta published: " + layout_label(meta), f"{e.step_time_s:.2f}", f"{e.mfu:.1%}",
              f"{e.tokens_per_s_per_gpu:,.0f}", f"{e.memory_gib_per_gpu:.1f}", str(e.fits))
    for pins, name, cms in (({"precision": "bf16"}, "search", cp_min_seq),
                            ({"precision": "bf16"}, "search, CP from 8K", 8192),
                            ({"precision": "bf16", "tp": 8, "pp": 16, "dp": 128}, "search, Meta's degrees pinned",
                             cp_min_seq)):
        if name.endswith("8K") and cp_min_seq <= 8192:
            continue
        r = search(model, cluster, global_batch=2048, seq_len=8192, stack=stack, top=3, pins=pins,
                   cp_min_seq=cms)
        for i, b in enumerate(r.top):
            t.add_row(f"{name} #{i + 1}: " + layout_label(b.layout), f"{b.step_time_s:.2f}", f"{b.mfu:.1%}",
                      f"{b.tokens_per_s_per_gpu:,.0f}", f"{b.memory_gib_per_gpu:.1f}", str(b.fits))
    console.print(t)


def main(argv: list[str]) -> int:
    console = Console(width=200)
    free = "--free-precision" in argv
    cms = int(argv[argv.index("--cp-min-seq") + 1]) if "--cp-min-seq" in argv else CP_MIN_SEQ
    console.print(f"context parallelism searched from {cms:,}-token sequences"
                  + ("; fp8 allowed" if free else ""))
    rows = quality(free, cms)
    t = Table(title="Searched best vs published layout (step model), same GPUs, batch, stack"
                    + ("" if free else " and precision"))
    for c in ("run", "GPUs", "published", "in space", "searched best", "speed-up", "memory ignored", "s"):
        t.add_column(c, justify="left" if c in ("run", "published", "searched best") else "right")
    for r in rows:
        flag = "" if r["published_fits"] else " (does not fit)"
        t.add_row(r["id"], f"{r['n_gpus']:,}", r["published"] + flag, r["in_space"],
                  r["searched"], f"{r['speedup']:.3f}", f"{r['speedup_no_memory']:.3f}", f"{r['seconds']:.2f}")
    console.print(t)
    sp = [r["speedup"] for r in rows]
    # a published layout that breaks a layout rule as the run file gives it (a global batch its DP degree
    # does not divide) cannot be run as given, so losing to it is reported apart
    bad = [r["id"] for r in rows if r["speedup"] < 1.0 - 1e-9 and r["published_fits"]
           and r["in_space"] != "invalid"]
    lost_to_invalid = [r["id"] for r in rows if r["speedup"] < 1.0 - 1e-9 and r["published_fits"]
                       and r["in_space"] == "invalid"]
    import statistics
    console.print(f"{len(rows)} runs: speed-up min {min(sp):.3f}, median {statistics.median(sp):.3f}, "
                  f"max {max(sp):.3f}; runs where the search loses to a valid published layout that fits: "
                  f"{len(bad)} {bad if bad else ''}"
                  + (f"; to a published layout that breaks a layout rule: {lost_to_invalid}"
                     if lost_to_invalid else ""))
    sp2 = [r["speedup_no_memory"] for r in rows]
    missing = [r["id"] for r in rows if r["in_space"] == "NO"]
    pruned = [r["id"] for r in rows if r["in_space"] == "cp pruned"]
    console.print(f"memory ignored: speed-up min {min(sp2):.3f}; published layouts outside the search space: "
                  f"{len(missing)} {missing if missing else ''}; outside only by the CP prune (cp below "
                  f"{cms:,} tokens; run with --cp-min-seq 8192): {len(pruned)} {pruned if pruned else ''}")
    bad += [r["id"] for r in rows if (r["speedup_no_memory"] < 1.0 - 1e-9 and r["in_space"] != "invalid")
            or r["in_space"] == "NO"]
    for r in rows:
        if r["problem"]:
            console.print(f"{r['id']}: the published layout breaks a layout rule as the run file gives it: "
                          f"{r['problem']}")
    unfit = [r["id"] for r in rows if not r["published_fits"]]
    if unfit:
        console.print(f"published layouts the step model says do not fit (the search cannot pick them): {unfit}")
    llama_405b(console, cms)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
