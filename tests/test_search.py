"""Layout search: every returned layout is valid and fits, pins hold, ties break deterministically, a model too
large is refused with the GPU count that would fit, and the vectorised search finds the same best layout as a
brute-force loop over ``estimate`` on small cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from megacluster import catalog, search as search_mod
from megacluster.cluster import make_cluster
from megacluster.errors import UserError
from megacluster.estimate import estimate
from megacluster.layout_check import layout_problems
from megacluster.search import min_gpus_to_fit, search, sweep
from megacluster.specs import Layout, ModelSpec, StackSpec

SMALL = ModelSpec(name="small", n_layers=8, d_model=1024, n_heads=16, n_kv_heads=4, ffn_hidden=4096, vocab=32000,
                  mlp="swiglu", seq_len=2048)


def _check_result(res, model, cluster, headroom=0.0):
    assert res.top and res.best == res.top[0]
    assert res.feasible <= res.searched
    assert len(res.why_slower) == len(res.top) - 1
    for e in res.top:
        L = e.layout
        assert layout_problems(model, cluster, L) == [], L
        assert L.n_gpus == cluster.n_gpus
        assert L.global_batch % (L.dp * L.micro_batch) == 0
        assert e.memory_gib_per_gpu <= cluster.gpu.hbm_gib * (1 - headroom) + 1e-9
        assert e.fits
    per_seq = [e.step_time_s / e.layout.global_batch for e in res.top]
    assert all(a <= b * (1 + 1e-9) for a, b in zip(per_seq, per_seq[1:]))


# --------------------------------------------------------------------------------------------- validity
@pytest.mark.parametrize("mid,gpu,n,kw,ckw", [
    ("gpt3-175b", "h100-sxm", 1024, dict(global_batch=1536), {}),
    ("llama3.1-8b", "h100-sxm", 64, dict(global_batch=128, memory_headroom=0.15), {}),
    ("mixtral-8x7b", "h100-sxm", 64, dict(global_batch=256, seq_len=4096), {}),
    ("llama3.1-70b", "h100-sxm", 256, dict(tokens_per_step=2 ** 23, seq_len=65536), {}),
    ("gpt3-175b", "a100-80gb", 96 * 8, {}, {}),                  # derived batch, non-power-of-two GPUs
    ("llama3.1-405b", "h100-sxm", 2048, dict(global_batch_bounds=(900, 1100)), dict(fabric="roce")),
    ("qwen1.5-moe-a2.7b", "a100-80gb", 24, dict(global_batch=48), {}),
])
def test_returned_layouts_divide_and_fit(mid, gpu, n, kw, ckw):
    model = catalog.model(mid)
    cluster = make_cluster(gpu, n, **ckw)
    res = search(model, cluster, **kw)
    _check_result(res, model, cluster, kw.get("memory_headroom", 0.0))
    if "global_batch" in kw:
        assert all(e.layout.global_batch == kw["global_batch"] for e in res.top)
    if "global_batch_bounds" in kw:
        lo, hi = kw["global_batch_bounds"]
        assert all(lo <= e.layout.global_batch <= hi for e in res.top)
    if "global_batch" not in kw and "global_batch_bounds" not in kw:
        assert res.notes and "global batch" in res.notes[0]
    for e in res.top:   # default: TP inside one 8-GPU NVLink domain
        assert cluster.node.nvlink_domain % e.layout.tp == 0


def test_fp8_only_where_the_gpu_has_it():
    res = search(catalog.model("llama3.1-8b"), make_cluster("a100-80gb", 16), global_batch=64, top=10)
    assert all(e.layout.precision == "bf16" for e in res.top)
    with pytest.raises(UserError, match="no fp8"):
        search(catalog.model("llama3.1-8b"), make_cluster("a100-80gb", 16), global_batch=64, precision="fp8")


# --------------------------------------------------------------------------------------------- pins
def test_pins_are_respected():
    model, cluster = catalog.model("gpt3-175b"), make_cluster("h100-sxm", 512)
    pins = dict(tp=4, pp=8, recompute="full", zero=3, precision="bf16", micro_batch=2)
    res = search(model, cluster, global_batch=1024, top=8, pins=pins)
    _check_result(res, model, cluster)
    for e in res.top:
        L = e.layout
        assert (L.tp, L.pp, L.recompute, L.zero, L.precision, L.micro_batch) == (4, 8, "full", 3, "bf16", 2)
        assert L.dp == 16


def test_keyword_and_list_pins_and_lifted_prunes():
    model, cluster = SMALL, make_cluster("h100-sxm", 32)
    res = search(model, cluster, global_batch=64, top=20, tp=[2, 4], zero=[0, 1], cp=2)
    for e in res.top:
        assert e.layout.tp in (2, 4) and e.layout.zero in (0, 1) and e.layout.cp == 2   # cp pinned at 2K seq
    # a pinned tp beyond the NVLink domain is honoured
    res = search(model, cluster, global_batch=64, tp=16)
    assert res.best.layout.tp == 16
    # without the pin, the default keeps TP inside the node; with tp_within_node=False it may leave it
    assert all(e.layout.tp <= 8 for e in search(model, cluster, global_batch=64, top=50).top)
    free = search(model, cluster, global_batch=64, top=200, tp_within_node=False)
    assert free.searched > search(model, cluster, global_batch=64).searched


@pytest.mark.parametrize("kw,msg", [
    (dict(pins={"tensor": 2}), "unknown pin"),
    (dict(tp=3), "pinned tp"),
    (dict(tp=0), "positive integer"),
    (dict(recompute="most"), "none, selective or full"),
    (dict(zero=4), "ZeRO stage"),
    (dict(zero="x"), "ZeRO stage"),
    (dict(recompute=1.5), "none, selective or full"),
    (dict(precision="int4"), "bf16, fp16 or fp8"),
    (dict(ep=2), "dense model"),
    (dict(pp=9), "more than the model's 8 layers"),
    (dict(memory_headroom=1.5), "headroom"),
    (dict(top=0), "--top"),
    (dict(global_batch=64, tokens_per_step=2 ** 20), "not both"),
    (dict(global_batch=0), "positive"),
    (dict(global_batch_bounds=(10, 5)), "bounds"),
    (dict(global_batch=7), "multiple of"),
    (dict(global_batch=1), "too small for 128 GPUs"),
    (dict(global_batch=64, cp=3), "does not divide the sequence"),
])
def test_bad_requests_are_one_line_user_errors(kw, msg):
    with pytest.raises(UserError, match=msg) as ei:
        search(SMALL, make_cluster("h100-sxm", 128), **kw)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------------------------- ties
def test_deterministic_and_repeatable():
    model, cluster = catalog.model("llama3.1-70b"), make_cluster("h100-sxm", 256)
    a = search(model, cluster, global_batch=512, top=10)
    b = search(model, cluster, global_batch=512, top=10)
    assert [e.layout for e in a.top] == [e.layout for e in b.top]
    assert [e.step_time_s for e in a.top] == [e.step_time_s for e in b.top]


def _order(L: Layout):
    return (L.tp, L.pp, L.dp, L.cp, L.ep, L.vp, L.micro_batch, L.global_batch,
            ("none", "selective", "full").index(L.recompute), L.zero, L.precision == "fp8")


def test_ties_break_by_degree_order(monkeypatch):
    """With a step model under which every layout takes the same time, the search returns layouts in
    lexicographic order of (tp, pp, dp, cp, ep, vp, micro_batch, ...), one per set of degrees."""
    real = search_mod.estimate_arrays

    def flat(model, cluster, stack, L):
        r = real(model, cluster, stack, L)
        n = np.asarray(L["tp"]).shape
        return {**r, "step_time_s": np.full(n, 2.0) * np.asarray(L["global_batch"]), "m_total": np.zeros(n)}

    monkeypatch.setattr(search_mod, "estimate_arrays", flat)
    cluster = make_cluster("h100-sxm", 16)
    res = search(SMALL, cluster, global_batch=32, top=6)
    keys = [_order(e.layout) for e in res.top]
    assert keys == sorted(keys)
    assert len({k[:8] + (k[10],) for k in keys}) == len(keys)        # knob-only duplicates collapsed
    first = res.best.layout
    assert (first.tp, first.pp, first.dp, first.micro_batch, first.recompute, first.zero) == \
        (1, 1, 16, 1, "none", 0)


def test_runner_up_reasons_name_a_time_component():
    res = search(catalog.model("gpt3-175b"), make_cluster("h100-sxm", 1024), global_batch=1536, top=5)
    labels = set(search_mod.TIME_LABELS.values())
    for line in res.why_slower:
        assert any(lab in line for lab in labels) or "as fast as the best" in line


# --------------------------------------------------------------------------------------------- too large
def test_model_too_large_is_refused_with_minimum_gpus():
    model, cluster = catalog.model("llama3.1-405b"), make_cluster("h100-sxm", 8)
    with pytest.raises(UserError) as ei:
        search(model, cluster, global_batch=64, seq_len=8192)
    msg = str(ei.value)
    assert "does not fit" in msg and "\n" not in msg
    n = min_gpus_to_fit(model, cluster, seq_len=8192)
    assert n is not None and f"at least {n:,} GPUs" in msg
    # memory only: n fits, n/2 does not
    cap = cluster.gpu.hbm_gib * 1024 ** 3
    assert search_mod._fits_anywhere(model, cluster.model_copy(update={"n_gpus": n}), StackSpec(), 8192, {}, True,
                                     cap)
    assert not search_mod._fits_anywhere(model, cluster.model_copy(update={"n_gpus": n // 2}), StackSpec(), 8192,
                                         {}, True, cap)
    # and a real search at that size finds a layout
    res = search(model, make_cluster("h100-sxm", n), global_batch=2 * n, seq_len=8192)
    assert res.best.fits


def test_pins_that_prevent_fitting_are_named():
    model, cluster = catalog.model("llama3.1-70b"), make_cluster("h100-sxm", 64)
    with pytest.raises(UserError, match="lift the pins") as ei:
        search(model, cluster, global_batch=64, seq_len=8192, tp=1, pp=1, zero=0, recompute="none")
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------------------------- brute force
def _divs(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def _brute(model, cluster, seq, batch, precisions, both_sp=False, stack=StackSpec()):
    """Every layout of the search space by scalar loops and ``estimate``: (best time per sequence, set of
    layouts within 1e-9 of it). ``batch(dp, mb, u) -> global batch or None`` applies the batch rule;
    ``both_sp`` also tries sequence parallelism off (the search keeps it on: it never costs time or memory)."""
    n, nl = cluster.n_gpus, model.n_layers
    cap = cluster.gpu.hbm_gib
    best, arg = math.inf, []
    cps = [c for c in _divs(n) if seq % c == 0 and seq // c >= 1024] if seq >= search_mod.CP_MIN_SEQ else [1]
    for tp in _divs(n):
        if cluster.node.nvlink_domain % tp:
            continue
        for pp in range(1, nl + 1):
            c = -(-nl // pp)
            if not (c * pp == nl or (c * pp - nl <= 4 and c >= 2)):
                continue
            for cp in cps:
                if n % (tp * pp * cp):
                    continue
                dp = n // (tp * pp * cp)
                for ep in (_divs(model.moe.n_experts) if model.moe else [1]):
                    for vp in range(1, nl + 1):
                        if vp > 1 and (pp == 1 or nl % (pp * vp)):
                            continue
                        for mb in range(1, 257):
                            gb = batch(dp, mb, pp if vp > 1 else 1)
                            if gb is None:
                                continue
                            for sp in ((True, False) if tp > 1 and both_sp else (tp > 1,)):
                                for rc in ("none", "selective", "full"):
                                    for zero in range(4):
                                        for prec in precisions:
                                            L = Layout(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, micro_batch=mb,
                                                       global_batch=gb, seq_len=seq, sequence_parallel=sp,
                                                       recompute=rc, zero=zero, precision=prec)
                                            if layout_problems(model, cluster, L):
                                                continue
                                            e = estimate(model, cluster, L, stack)
                                            if e.memory_gib_per_gpu > cap:
                                                continue
                                            t = e.step_time_s / gb
                                            if t < best * (1 - 1e-9):
                                                best, arg = t, [L]
                                            elif t <= best * (1 + 1e-9):
                                                arg.append(L)
    return best, arg


def _exact(gb):
    return lambda dp, mb, u: gb if gb % (dp * mb * u) == 0 else None


def _ranged(target, lo, hi):
    allowed = set(_divs(target)) | {2 ** k for k in range(int(math.log2(hi)) + 1)}

    def rule(dp, mb, u):
        if mb not in allowed or mb > hi:
            return None
        unit = dp * mb * u
        k_lo, k_hi = -(-lo // unit), hi // unit
        if k_lo > k_hi:
            return None
        k = min(max(round(target / unit), k_lo), k_hi)
        return k * unit if k >= 1 else None
    return rule


MOE = ModelSpec(name="small-moe", n_layers=4, d_model=1024, n_heads=8, n_kv_heads=8, ffn_hidden=2816, vocab=32000,
                mlp="swiglu", seq_len=2048, moe={"n_experts": 8, "top_k": 2, "expert_ffn_hidden": 2816})


@pytest.mark.parametrize("name,model,gpu,n,seq,kw,batch,precisions,both_sp", [
    ("7B on 8 x A100 40GB, memory binds", "llama2-7b", "a100-40gb", 8, 2048, dict(global_batch=16),
     _exact(16), ("bf16",), True),
    ("MoE with EP on 8 x H100, fp8 or not", MOE, "h100-sxm", 8, 2048, dict(global_batch=8), _exact(8),
     ("bf16", "fp8"), False),
    ("long sequence with CP", "llama3.2-1b", "h100-sxm", 8, 32768, dict(global_batch=4, precision="bf16"),
     _exact(4), ("bf16",), False),
    ("two nodes, batch bounds", SMALL, "a100-80gb", 16, 2048, dict(global_batch_bounds=(20, 36)),
     _ranged(36, 20, 36), ("bf16",), False),
])
def test_search_equals_brute_force(name, model, gpu, n, seq, kw, batch, precisions, both_sp):
    model = catalog.model(model) if isinstance(model, str) else model
    cluster = make_cluster(gpu, n)
    res = search(model, cluster, seq_len=seq, **kw)
    best, arg = _brute(model, cluster, seq, batch, precisions, both_sp)
    got = res.best.step_time_s / res.best.layout.global_batch
    assert got == pytest.approx(best, rel=1e-9), name
    want = {(L.tp, L.pp, L.dp, L.cp, L.ep, L.vp, L.micro_batch, L.global_batch, L.precision) for L in arg}
    b = res.best.layout
    assert (b.tp, b.pp, b.dp, b.cp, b.ep, b.vp, b.micro_batch, b.global_batch, b.precision) in want, name


# --------------------------------------------------------------------------------------------- sweep
def test_sweep_rows_and_reasons():
    res = sweep(catalog.model("gpt3-175b"), "h100-sxm", [256, 1024, 8192, 4], global_batch=1024)
    assert [r.n_gpus for r in res.rows] == [4, 256, 1024, 8192]
    assert res.rows[0].best is None and "does not fit" in res.rows[0].reason
    for r in res.rows[1:]:
        assert r.best is not None and r.mfu > 0 and r.step_time_s > 0
        assert r.days_per_trillion_tokens == pytest.approx(1e12 / r.best.tokens_per_s / 86400)
    # 1,024 sequences on 8,192 GPUs: efficiency falls, and the reason says why
    assert res.rows[3].mfu < res.rows[2].mfu
    assert res.rows[3].reason
    assert any(w in res.rows[3].reason for w in ("bubble", "DP communication", "too small", "tier",
                                                  "less work per GPU", "recompute"))
    js = res.as_json()
    assert len(js["rows"]) == 4


def test_sweep_rejects_bad_sizes():
    with pytest.raises(UserError, match="positive"):
        sweep(SMALL, "h100-sxm", [0, 8])


def test_progress_and_json():
    calls = []
    res = search(catalog.model("gpt3-175b"), make_cluster("h100-sxm", 1024), global_batch=1536, top=3,
                 progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][0] == calls[-1][1] and all(a <= b for (a, _), (b, _) in zip(calls, calls[1:]))
    js = res.as_json()
    assert set(js) >= {"best", "top", "searched", "feasible", "seconds", "why_slower"}
    assert js["best"]["tp"] == res.best.layout.tp and js["best"]["step_time_s"] == res.best.step_time_s
    assert {"mfu", "memory_gib_per_gpu"} <= set(js["best"]) and len(js["top"]) == 3


def test_cp_searched_from_cp_min_seq():
    model, cluster = catalog.model("llama3.1-8b"), make_cluster("h100-sxm", 16)
    default = search(model, cluster, global_batch=32, seq_len=8192, top=200)
    assert all(e.layout.cp == 1 for e in default.top)
    wide = search(model, cluster, global_batch=32, seq_len=8192, top=200, cp_min_seq=8192)
    assert any(e.layout.cp > 1 for e in wide.top) and wide.searched > default.searched
    assert wide.best.step_time_s <= default.best.step_time_s * (1 + 1e-12)
