"""Find the fastest parallel layout that fits: enumerate layouts as numpy arrays, evaluate them with the step
model (:func:`megacluster.estimate.estimate_arrays`, the same code ``estimate`` runs), drop what does not fit
in memory, rank by time per sequence.

The space: TP x PP x DP x CP x EP degrees, virtual pipeline stages, micro-batch, recompute mode, ZeRO stage
and fp8 or not. Candidates meet the rules of :mod:`megacluster.layout_check` (applied here as vectorised masks)
plus these prunes, each of which a pin lifts:

* TP stays inside one NVLink domain and divides it (``tp_within_node``);
* PP divides the layers, or leaves at most 4 stages one layer short (Llama 3 405B: 126 layers on 16 stages);
  interleaving (vp > 1) needs pp*vp to divide the layers, as Megatron's schedule does;
* CP only for sequences of 16K tokens or more (``cp_min_seq``; NeMo also runs Llama 3 8B and 70B at 8K with
  CP2: pass 8192 to search those), with at least 1K tokens per rank;
* EP only for mixture-of-experts models;
* sequence parallelism on whenever TP > 1 (it never costs time or memory in the step model);
* ZeRO stages are not told apart when there is a single data-parallel rank.

``search`` returns the top layouts as :class:`StepEstimate` objects; ``sweep`` repeats it over cluster sizes
and says where efficiency falls and why.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Iterable, Optional

import numpy as np
from pydantic import BaseModel

from .cluster import make_cluster
from .errors import UserError, short
from .estimate import StepEstimate, estimate, estimate_arrays
from .physics.memory import GIB
from .specs import ClusterSpec, GPUSpec, Layout, ModelSpec, StackSpec

DEFAULT_TOKENS_PER_STEP = 4 * 2 ** 20     # 4M tokens per step when neither batch nor tokens are given
DERIVED_BATCH_SLACK = 0.25                # a derived global batch may move this much to suit dp x micro-batch
CP_MIN_SEQ = 16384                        # context parallelism is searched from this sequence length on
CP_MIN_TOKENS_PER_RANK = 1024
PP_MAX_SHORT_STAGES = 4                   # pipeline stages that may hold one layer fewer than the others
CHUNK = 200_000                           # candidates per estimate_arrays call
MAX_PROBE_GPUS = 2 ** 23                  # the minimum-GPU search stops here

RECOMPUTE_NAMES = ("none", "selective", "full")
PIN_KEYS = tuple(Layout.model_fields)
_DEGREES = ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch")
_FIELDS = ("tp", "pp", "dp", "cp", "ep", "vp", "micro_batch", "global_batch", "recompute", "zero", "fp8")

Progress = Callable[[int, int], None]


class SearchResult(BaseModel):
    """The best layouts found, fastest first. ``searched``: layouts evaluated (all valid ones in the space);
    ``feasible``: those that fit in memory; ``seconds``: wall time of the search."""

    model: str
    gpu: str
    n_gpus: int
    global_batch: int
    seq_len: int
    best: StepEstimate
    top: list[StepEstimate]
    searched: int
    feasible: int
    seconds: float
    why_slower: list[str]
    notes: list[str]

    def as_json(self) -> dict[str, Any]:
        """The ``plan --json`` object: best and top as {layout fields..., step_time_s, mfu,
        memory_gib_per_gpu, tokens_per_s_per_gpu, time_s, virtual_stages (the model chunks per pipeline rank
        the step ran, which a stack may set where vp is 1)}, plus the counts."""
        def row(e: StepEstimate) -> dict[str, Any]:
            return {**e.layout.model_dump(), "virtual_stages": e.virtual_stages, "step_time_s": e.step_time_s,
                    "mfu": e.mfu,
                    "memory_gib_per_gpu": e.memory_gib_per_gpu, "tokens_per_s_per_gpu": e.tokens_per_s_per_gpu,
                    "time_s": e.time_s}
        return {"model": self.model, "gpu": self.gpu, "n_gpus": self.n_gpus, "best": row(self.best),
                "top": [row(e) for e in self.top], "why_slower": self.why_slower, "searched": self.searched,
                "feasible": self.feasible, "seconds": self.seconds, "notes": self.notes}


# --------------------------------------------------------------------------------------------- helpers
def divisors(n: int) -> np.ndarray:
    """Sorted divisors of a positive integer."""
    r = np.arange(1, math.isqrt(n) + 1)
    d = r[n % r == 0]
    return np.unique(np.concatenate([d, n // d]))


def layout_label(L: Layout) -> str:
    """Short text for a layout: ``TP8 PP16 DP128 vp2 mb1 selective Z1 bf16``."""
    return L.label()


def _as_list(v: Any) -> list:
    if isinstance(v, (list, tuple, set, frozenset, np.ndarray)):
        return list(v)
    return [v]


def _ints(key: str, v: Any, low: int = 1, high: Optional[int] = None) -> np.ndarray:
    vals = _as_list(v)
    if not vals or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < low
                       or (high is not None and x > high) for x in vals):
        want = "a positive integer" if high is None else f"an integer from {low} to {high}"
        raise UserError(f"pin {key}={short(v)}: expected {want} (or a list of them)")
    return np.unique(np.asarray(vals, dtype=np.int64))


def _normalise_pins(pins: dict[str, Any], gpu: GPUSpec) -> dict[str, Any]:
    """Pins as arrays of allowed values (degrees, zero, recompute codes, fp8 flags) plus the precision label."""
    out: dict[str, Any] = {}
    for k, v in pins.items():
        if v is None:
            continue
        if k not in PIN_KEYS:
            raise UserError(f"unknown pin {short(k)}; pins are layout fields: {', '.join(PIN_KEYS)}")
        if k in _DEGREES or k in ("global_batch", "seq_len"):
            out[k] = _ints(k, v)
        elif k == "zero":
            out[k] = _ints("zero (ZeRO stage)", v, 0, 3)
        elif k == "recompute":
            vals = _as_list(v)
            codes = []
            for x in vals:
                if isinstance(x, str) and x in RECOMPUTE_NAMES:
                    codes.append(RECOMPUTE_NAMES.index(x))
                elif isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 2:
                    codes.append(x)
                else:
                    raise UserError(f"pin recompute={short(v)}: use none, selective or full")
            out[k] = np.unique(codes)
        elif k == "sequence_parallel":
            if not isinstance(v, bool):
                raise UserError(f"pin sequence_parallel={short(v)}: expected true or false")
            out[k] = v
        elif k == "precision":
            vals = _as_list(v)
            bad = [x for x in vals if x not in ("bf16", "fp16", "fp8")]
            if bad:
                raise UserError(f"pin precision={short(bad[0])}: use bf16, fp16 or fp8")
            if "fp8" in vals and "fp8" not in gpu.peak_tflops:
                raise UserError(f"{gpu.id} has no fp8 tensor cores; pin precision {gpu.half_precision}")
            if "bf16" in vals and gpu.half_precision != "bf16":
                raise UserError(f"{gpu.id} has no bf16 arithmetic; pin precision {gpu.half_precision}")
            if "bf16" in vals and "fp16" in vals:
                raise UserError("pin one 16-bit precision (bf16 or fp16), not both: the step model treats "
                                "them alike")
            out[k] = vals
    return out


def _batch_policy(model: ModelSpec, seq_len: int, global_batch, tokens_per_step, bounds,
                  pinned_gb) -> tuple[int, int, int, list[str]]:
    """(target, low, high) global batch in sequences, and notes saying how they were chosen."""
    notes: list[str] = []
    if pinned_gb is not None:
        if len(pinned_gb) != 1:
            raise UserError("pin one global batch, or give bounds with --global-batch-min/--global-batch-max")
        if global_batch is not None and int(global_batch) != int(pinned_gb[0]):
            raise UserError(f"global batch given twice ({global_batch} and pin {int(pinned_gb[0])})")
        global_batch = int(pinned_gb[0])
    if global_batch is not None and tokens_per_step is not None:
        raise UserError("give either a global batch (sequences) or tokens per step, not both")
    if global_batch is not None and (isinstance(global_batch, bool) or int(global_batch) < 1):
        raise UserError(f"global batch must be a positive number of sequences, got {global_batch}")
    if bounds is not None:
        lo, hi = (int(x) for x in bounds)
        if lo < 1 or hi < lo:
            raise UserError(f"global batch bounds {bounds} must be 1 <= low <= high")
        if global_batch is not None and not lo <= int(global_batch) <= hi:
            raise UserError(f"global batch {global_batch} is outside its bounds [{lo}, {hi}]")
    if global_batch is not None:
        target = int(global_batch)
        if bounds is None:
            return target, target, target, notes
        notes.append(f"global batch {target} sequences, moved within [{lo}, {hi}] to suit dp x micro-batch")
        return target, lo, hi, notes
    if tokens_per_step is not None:
        if tokens_per_step < seq_len:
            raise UserError(f"tokens per step {tokens_per_step} is less than one sequence of {seq_len}")
        target = max(1, round(tokens_per_step / seq_len))
        why = f"{tokens_per_step:,.0f} tokens per step"
    elif bounds is not None:
        target = hi
        notes.append(f"global batch: the largest within [{lo}, {hi}] that suits dp x micro-batch")
        return target, lo, hi, notes
    else:
        target = max(1, DEFAULT_TOKENS_PER_STEP // seq_len)
        why = f"the default of {DEFAULT_TOKENS_PER_STEP / 2 ** 20:.0f}M tokens per step (set --global-batch)"
    if bounds is None:
        lo = max(1, math.ceil(target * (1 - DERIVED_BATCH_SLACK)))
        hi = max(lo, math.floor(target * (1 + DERIVED_BATCH_SLACK)))
    notes.append(f"global batch about {target} sequences of {seq_len} tokens from {why}; each layout takes the "
                 f"nearest multiple of its dp x micro-batch within [{lo}, {hi}]")
    return target, lo, hi, notes


# --------------------------------------------------------------------------------------------- space
class _Space:
    """Valid candidate layouts: structure x micro-batch pairs (with their global batch) and the knobs
    (recompute, ZeRO, fp8) every pair is combined with."""

    def __init__(self, pairs: dict[str, np.ndarray], knobs: dict[str, np.ndarray], sp: Optional[bool],
                 precision16: str):
        self.pairs, self.knobs, self.sp, self.precision16 = pairs, knobs, sp, precision16
        self.n_pairs = len(pairs["tp"])
        self.n_knobs = len(knobs["recompute"])

    def chunks(self, size: int = CHUNK):
        """Yield dicts of candidate arrays (full product of pairs x knobs, ZeRO deduplicated)."""
        per = max(1, size // self.n_knobs)
        for a in range(0, self.n_pairs, per):
            b = min(self.n_pairs, a + per)
            n = b - a
            out = {k: np.repeat(v[a:b], self.n_knobs) for k, v in self.pairs.items()}
            for k, v in self.knobs.items():
                out[k] = np.tile(v, n)
            # with one data-parallel shard ZeRO stages differ in nothing real: keep the lowest allowed
            single = out["dp"] * out["cp"] == 1
            keep = ~single | (out["zero"] == self.knobs["zero"].min())
            yield {k: v[keep] for k, v in out.items()}, b * self.n_knobs

    @property
    def size(self) -> int:
        return self.n_pairs * self.n_knobs


def _allowed(vals: np.ndarray, pin) -> np.ndarray:
    return vals if pin is None else np.intersect1d(vals, pin)


def build_space(model: ModelSpec, cluster: ClusterSpec, seq_len: int, target: int, lo: int, hi: int,
                pins: dict[str, Any], tp_within_node: bool = True, probe: bool = False,
                cp_min_seq: int = CP_MIN_SEQ) -> _Space:
    """Enumerate every valid layout of the search space as arrays.

    ``probe``: memory-only enumeration for the minimum-GPU search (micro-batch 1 unless pinned, global batch
    set to dp x pp micro-batches so every pipeline stage holds its full in-flight activations)."""
    m, n = model, cluster.n_gpus
    L = m.n_layers
    divs = divisors(n)
    # ---- tensor parallel: heads divisible, KV heads split or replicated, inside one NVLink domain
    tp = pins.get("tp", divs)
    tp = tp[(n % tp == 0) & (m.n_heads % tp == 0) & ((tp <= m.kv_heads) | (tp % m.kv_heads == 0))]
    if tp_within_node and "tp" not in pins:
        tp = tp[cluster.node.nvlink_domain % tp == 0]
    if not len(tp):
        pinned = f" pinned tp={pins['tp'].tolist()}" if "tp" in pins else " tensor-parallel degree"
        raise UserError(f"no{pinned} divides both the {n:,} GPUs and the {m.n_heads} attention heads "
                        f"({m.kv_heads} key/value heads) of {m.name}")
    # ---- context parallel
    if "cp" in pins:
        cp = pins["cp"]
    elif seq_len >= cp_min_seq:
        cp = divs[(seq_len % divs == 0) & (seq_len // divs >= CP_MIN_TOKENS_PER_RANK)]
    else:
        cp = np.array([1])
    cp = cp[seq_len % cp == 0]
    if not len(cp):
        raise UserError(f"pinned cp={pins['cp'].tolist()} does not divide the sequence length {seq_len}")
    # ---- pipeline
    pp = pins.get("pp", divs)
    pp = pp[pp <= L]
    if "pp" not in pins:
        c = -(-L // pp)
        short = c * pp - L
        pp = pp[(short == 0) | ((short <= PP_MAX_SHORT_STAGES) & (c >= 2))]
    if not len(pp):
        raise UserError(f"pinned pp={pins['pp'].tolist()} is more than the model's {L} layers")
    # ---- experts
    if m.moe:
        ep = _allowed(divisors(m.moe.n_experts), pins.get("ep"))
    else:
        if "ep" in pins and (pins["ep"] > 1).any():
            raise UserError(f"ep={pins['ep'].tolist()} but {m.name} is a dense model; use ep 1")
        ep = np.array([1])
    vp = pins.get("vp", divisors(L))
    # ---- structures: tp x cp x pp x ep x vp
    T, C, P, E, V = (a.ravel() for a in np.meshgrid(tp, cp, pp, ep, vp, indexing="ij"))
    prod = T * C * P
    ok = n % prod == 0
    D = np.where(ok, n // np.maximum(prod, 1), 0)
    if "dp" in pins:
        ok &= np.isin(D, pins["dp"])
    if m.moe:
        ok &= (m.moe.n_experts % E == 0) & ((D * C) % E == 0)
    ok &= (V == 1) | ((P > 1) & (P * V <= L))
    if "vp" not in pins:
        ok &= (V == 1) | (L % (P * V) == 0)
    T, C, P, E, V, D = (a[ok] for a in (T, C, P, E, V, D))
    if not len(T):
        what = ", ".join(f"{k}={pins[k].tolist()}" for k in ("tp", "pp", "dp", "cp", "ep", "vp") if k in pins)
        raise UserError(f"no split of {n:,} GPUs into tp*pp*dp*cp suits {m.name}" + (f" with {what}" if what
                        else "") + "; change the pins or the GPU count")
    # ---- micro-batch and global batch
    if probe:
        mbs = pins.get("micro_batch", np.array([1]))
    elif lo == hi:
        mbs = _allowed(divisors(target), pins.get("micro_batch"))
    else:
        cand = np.union1d(divisors(target), 2 ** np.arange(int(math.log2(hi)) + 1))
        mbs = _allowed(cand[cand <= hi], pins.get("micro_batch"))
    S = len(T)
    si, mi = (a.ravel() for a in np.meshgrid(np.arange(S), np.arange(len(mbs)), indexing="ij"))
    mb = mbs[mi]
    d, p, v = D[si], P[si], V[si]
    unit = d * mb * np.where(v > 1, p, 1)          # interleaving needs micro-batches in multiples of pp
    if probe:
        gb = d * mb * p
        good = np.ones_like(gb, dtype=bool)
    elif lo == hi:
        gb = np.full_like(unit, target)
        good = target % unit == 0
    else:
        k_lo = -(-lo // unit)
        k_hi = hi // unit
        k = np.clip(np.rint(target / unit).astype(np.int64), k_lo, k_hi)
        gb = k * unit
        good = (k_lo <= k_hi) & (k >= 1)
    if not good.any():
        min_dp = int(D.min())
        gb_txt = f"global batch {target}" if lo == hi else f"global batch range [{lo}, {hi}]"
        if hi < min_dp:
            raise UserError(f"{gb_txt} is too small for {n:,} GPUs: every layout has at least {min_dp:,} "
                            f"data-parallel ranks; use a global batch that is a multiple of {min_dp:,}")
        raise UserError(f"{gb_txt} cannot be split over the data-parallel ranks of any layout of {n:,} GPUs "
                        f"(dp*micro_batch must divide it; the smallest dp here is {min_dp:,}): use a global "
                        f"batch that is a multiple of {min_dp:,}")
    si, mb, gb = si[good], mb[good], gb[good]
    pairs = {"tp": T[si], "pp": P[si], "dp": D[si], "cp": C[si], "ep": E[si], "vp": V[si],
             "micro_batch": mb, "global_batch": gb}
    # ---- knobs
    rc = pins.get("recompute", np.array([0, 1, 2]))
    zero = pins.get("zero", np.array([0, 1, 2, 3]))
    prec = pins.get("precision")
    if prec is None:
        fp8 = np.array([False, True]) if "fp8" in cluster.gpu.peak_tflops else np.array([False])
        p16 = cluster.gpu.half_precision
    else:
        fp8 = np.unique(np.array(["fp8" == x for x in prec]))
        p16 = next((x for x in prec if x != "fp8"), cluster.gpu.half_precision)
    R, Z, F = (a.ravel() for a in np.meshgrid(rc, zero, fp8, indexing="ij"))
    return _Space(pairs, {"recompute": R, "zero": Z, "fp8": F}, pins.get("sequence_parallel"), p16)


def _arrays(space: _Space, c: dict[str, np.ndarray], seq_len: int) -> dict[str, np.ndarray]:
    sp = (c["tp"] > 1) if space.sp is None else np.full(len(c["tp"]), space.sp)
    return {**c, "seq_len": np.full(len(c["tp"]), seq_len), "sequence_parallel": sp}


def _to_layout(space: _Space, row: dict[str, Any], seq_len: int) -> Layout:
    tp = int(row["tp"])
    return Layout(tp=tp, pp=int(row["pp"]), dp=int(row["dp"]), cp=int(row["cp"]), ep=int(row["ep"]),
                  vp=int(row["vp"]), micro_batch=int(row["micro_batch"]), global_batch=int(row["global_batch"]),
                  seq_len=seq_len, sequence_parallel=bool(tp > 1 if space.sp is None else space.sp),
                  recompute=RECOMPUTE_NAMES[int(row["recompute"])], zero=int(row["zero"]),
                  precision="fp8" if row["fp8"] else space.precision16)


# --------------------------------------------------------------------------------------------- search
def search(model: ModelSpec, cluster: ClusterSpec, global_batch: Optional[int] = None,
           seq_len: Optional[int] = None, stack: Optional[StackSpec] = None, top: int = 5,
           tokens_per_step: Optional[float] = None, memory_headroom: float = 0.0, tp_within_node: bool = True,
           pins: Optional[dict[str, Any]] = None, global_batch_bounds: Optional[tuple[int, int]] = None,
           progress: Optional[Progress] = None, cp_min_seq: int = CP_MIN_SEQ,
           observe: Optional[Callable[[np.ndarray, np.ndarray, np.ndarray], None]] = None,
           **more_pins: Any) -> SearchResult:
    """The fastest layouts of ``model`` on ``cluster`` that fit in memory, fastest first.

    ``global_batch`` in sequences (or ``tokens_per_step``; neither: about 4M tokens); ``seq_len`` defaults to
    the model's. ``pins`` (and extra keyword arguments) fix any :class:`Layout` field to a value or a list of
    values (``tp=8``, ``recompute="full"``, ``precision="bf16"``, ``zero=[1, 3]``); pinned degrees also lift
    the search's prunes. ``memory_headroom``: fraction of HBM kept free. ``global_batch_bounds``: (low, high)
    sequences within which each layout may take the global batch nearest the target that its dp x
    micro-batch divides (layouts are then ranked by time per sequence). ``progress(done, total)`` is called
    after each chunk of candidates. ``cp_min_seq``: shortest sequence for which context parallelism is
    searched without a cp pin. ``observe(step_time_s, memory_bytes, fits)``, if given, sees every chunk of
    evaluated layouts (arrays of one value per layout: the report's scatter of the searched space). Raises
    UserError when nothing fits, with the smallest GPU count that would."""
    t0 = time.perf_counter()
    stack = stack or StackSpec()
    allp = {**(pins or {}), **more_pins}
    P = _normalise_pins(allp, cluster.gpu)
    if "seq_len" in P:
        if len(P["seq_len"]) != 1 or (seq_len is not None and seq_len != int(P["seq_len"][0])):
            raise UserError("give one sequence length")
        seq_len = int(P["seq_len"][0])
    seq_len = int(seq_len or model.seq_len)
    if seq_len < 1:
        raise UserError(f"sequence length must be positive, got {seq_len}")
    if isinstance(top, bool) or int(top) < 1:
        raise UserError(f"--top must be at least 1, got {top}")
    if not 0.0 <= memory_headroom < 1.0:
        raise UserError(f"memory headroom {memory_headroom} must be a fraction in [0, 1)")
    target, lo, hi, notes = _batch_policy(model, seq_len, global_batch, tokens_per_step, global_batch_bounds,
                                          P.pop("global_batch", None))
    space = build_space(model, cluster, seq_len, target, lo, hi, P, tp_within_node, cp_min_seq=cp_min_seq)
    cap = cluster.gpu.hbm_gib * GIB * (1.0 - memory_headroom)

    kept: list[dict[str, np.ndarray]] = []
    searched = feasible = 0
    smallest = (math.inf, None)
    total = space.size
    for c, done in space.chunks():
        r = estimate_arrays(model, cluster, stack, _arrays(space, c, seq_len))
        n = len(c["tp"])
        searched += n
        mem = np.broadcast_to(r["m_total"], (n,))
        fits = mem <= cap
        i_min = int(np.argmin(mem))
        if mem[i_min] < smallest[0]:
            smallest = (float(mem[i_min]), {k: v[i_min] for k, v in c.items()})
        feasible += int(fits.sum())
        if observe is not None:
            observe(np.broadcast_to(r["step_time_s"], (n,)), mem, fits)
        if fits.any():
            idx = np.nonzero(fits)[0]
            per_seq = np.broadcast_to(r["step_time_s"], (n,))[idx] / c["global_batch"][idx]
            key = np.rint(np.log(per_seq) * 1e9).astype(np.int64)      # ties within 1e-9 relative
            # layouts that differ only in a knob that changes nothing (recompute or ZeRO stage at equal time)
            # are one answer: keep the first, which is the lowest in degree order (knobs vary fastest)
            group = np.column_stack([key] + [c[k][idx] for k in _FIELDS if k not in ("recompute", "zero")])
            first = np.sort(np.unique(group, axis=0, return_index=True)[1])
            idx, key = idx[first], key[first]
            if len(idx) > top:
                kth = np.partition(key, top - 1)[top - 1]
                sel = key <= kth
                idx, key = idx[sel], key[sel]
            kept.append({**{k: c[k][idx] for k in _FIELDS}, "key": key})
        if progress:
            progress(done, total)
    if not kept:
        raise _nothing_fits(model, cluster, stack, seq_len, target, lo, hi, P, tp_within_node, memory_headroom,
                            smallest, space)
    allk = {k: np.concatenate([d[k] for d in kept]) for k in kept[0]}
    # rank: time per sequence, then lexicographic on the degrees and knobs (ascending)
    order = np.lexsort(tuple(allk[k] for k in reversed(_FIELDS)) + (allk["key"],))
    best_rows = [{k: allk[k][i] for k in _FIELDS} for i in order[:top]]
    ests = [estimate(model, cluster, _to_layout(space, row, seq_len), stack, check=False) for row in best_rows]
    why = [why_slower(ests[0], e) for e in ests[1:]]
    return SearchResult(model=model.name, gpu=cluster.gpu.id, n_gpus=cluster.n_gpus, global_batch=target,
                        seq_len=seq_len, best=ests[0], top=ests, searched=searched, feasible=feasible,
                        seconds=time.perf_counter() - t0, why_slower=why, notes=notes)


TIME_LABELS = {"gemm_attn_proj": "attention-projection GEMMs", "gemm_mlp": "MLP GEMMs",
               "attention": "attention kernels", "memory_bound": "memory-bound ops", "recompute": "recompute",
               "output_layer": "output layer", "tp_comm": "TP communication", "cp_comm": "CP communication",
               "ep_comm": "EP all-to-all", "pp_comm": "pipeline send/recv", "bubble": "pipeline bubble",
               "dp_comm": "DP communication", "overlap_slowdown": "compute slowed by hidden communication",
               "optimizer": "optimizer step"}


def why_slower(best: StepEstimate, other: StepEstimate) -> str:
    """One line: how much slower ``other`` is than ``best`` and which time component makes it so."""
    scale = best.layout.global_batch / other.layout.global_batch     # compare per sequence
    d_total = other.step_time_s * scale - best.step_time_s
    label = layout_label(other.layout)
    if d_total <= best.step_time_s * 1e-9:
        return f"{label}: as fast as the best (tie broken by degree order)"
    diffs = {k: other.time_s.get(k, 0.0) * scale - best.time_s.get(k, 0.0) for k in best.time_s}
    k = max(diffs, key=lambda x: diffs[x])
    extra = [f"{TIME_LABELS.get(j, j)} {diffs[j]:+.3g} s" for j in sorted(diffs, key=lambda x: -diffs[x])[1:3]
             if diffs[j] > 0.05 * d_total]
    return (f"{label}: +{d_total / best.step_time_s:.1%} per step (+{d_total:.3g} s), mostly "
            f"{TIME_LABELS.get(k, k)} {diffs[k]:+.3g} s" + (f" ({', '.join(extra)})" if extra else ""))


# --------------------------------------------------------------------------------------------- nothing fits
def _fits_anywhere(model, cluster, stack, seq_len, pins, tp_within_node, cap) -> bool:
    try:
        space = build_space(model, cluster, seq_len, 1, 1, 1, pins, tp_within_node, probe=True)
    except UserError:
        return False
    for c, _ in space.chunks():
        r = estimate_arrays(model, cluster, stack, _arrays(space, c, seq_len))
        if (np.asarray(r["m_total"]) <= cap).any():
            return True
    return False


def min_gpus_to_fit(model: ModelSpec, cluster: ClusterSpec, stack: Optional[StackSpec] = None,
                    seq_len: Optional[int] = None, pins: Optional[dict[str, Any]] = None,
                    tp_within_node: bool = True, memory_headroom: float = 0.0) -> Optional[int]:
    """The smallest GPU count of the form 8 x 2^k above the cluster's (same GPU, node and fabric) on which
    some layout fits in memory (memory only: micro-batch 1, any recompute and ZeRO stage the pins allow);
    None if none up to 8M GPUs."""
    P = _normalise_pins(pins or {}, cluster.gpu)
    return _min_gpus(model, cluster, stack or StackSpec(), int(seq_len or model.seq_len), P, tp_within_node,
                     cluster.gpu.hbm_gib * GIB * (1.0 - memory_headroom))


def _min_gpus(model, cluster, stack, seq_len, P, tp_within_node, cap) -> Optional[int]:
    P = {k: v for k, v in P.items() if k not in ("dp", "global_batch")}
    n = 8
    while n <= cluster.n_gpus:
        n *= 2
    while n <= MAX_PROBE_GPUS:
        if _fits_anywhere(model, cluster.model_copy(update={"n_gpus": n}), stack, seq_len, P, tp_within_node, cap):
            return n
        n *= 2
    return None


def _nothing_fits(model, cluster, stack, seq_len, target, lo, hi, P, tp_within_node, headroom, smallest,
                  space) -> UserError:
    g = cluster.gpu
    cap_txt = f"{g.hbm_gib:g} GiB" + (f" less {headroom:.0%} headroom" if headroom else "")
    mem, row = smallest
    where = ""
    if row is not None:
        where = f" (the smallest footprint found is {mem / GIB:.1f} GiB per GPU, with " \
                f"{layout_label(_to_layout(space, row, seq_len))})"
    cap = g.hbm_gib * GIB * (1 - headroom)
    restricting = [k for k in P if k not in ("precision", "sequence_parallel", "dp", "global_batch")]
    loose = {k: v for k, v in P.items() if k in ("precision", "sequence_parallel")}
    hints = []
    if restricting and _fits_anywhere(model, cluster, stack, seq_len, loose, tp_within_node, cap):
        hints.append("lift the pins (" + ", ".join(restricting) + ")")
    n_min = _min_gpus(model, cluster, stack, seq_len, P, tp_within_node, cap)
    if n_min is not None:
        free = _min_gpus(model, cluster, stack, seq_len, loose, tp_within_node, cap) if restricting else n_min
        hints.append(f"use at least {n_min:,} GPUs (the smallest count 8 x 2^k that fits in memory" +
                     (f"; {free:,} without the pins)" if free is not None and free < n_min else ")"))
    from . import catalog
    bigger = sorted((catalog.gpu(i) for i in catalog.names("gpus")), key=lambda x: x.hbm_gib)
    bigger = [x for x in bigger if x.hbm_gib > g.hbm_gib]
    if bigger:
        hints.append(f"use a GPU with more memory ({bigger[-1].id}: {bigger[-1].hbm_gib:g} GiB)")
    if seq_len > 4096 and "cp" not in P:
        hints.append(f"use a shorter sequence (--seq-len {8192 if seq_len > 8192 else seq_len // 2}) or pin cp "
                     "(context parallelism)")
    if headroom:
        hints.append("keep less memory headroom")
    msg = f"{model.name} does not fit on {cluster.n_gpus:,} x {g.id} ({cap_txt} each) with any layout searched{where}"
    if n_min is None and not bigger:
        return UserError(msg + "; no cluster of up to 8M such GPUs fits it")
    return UserError(msg + "; " + ", or ".join(hints))


# --------------------------------------------------------------------------------------------- sweep
class SweepRow(BaseModel):
    n_gpus: int
    best: Optional[StepEstimate] = None
    layout: str = ""
    mfu: Optional[float] = None
    step_time_s: Optional[float] = None
    days_per_trillion_tokens: Optional[float] = None
    reason: str = ""          # why efficiency falls from the previous size ('' if it does not), or the error


class SweepResult(BaseModel):
    model: str
    gpu: str
    seq_len: int
    rows: list[SweepRow]
    seconds: float
    notes: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"model": self.model, "gpu": self.gpu, "seq_len": self.seq_len, "seconds": self.seconds,
                "notes": self.notes, "rows": [
                    {"n_gpus": r.n_gpus, "layout": r.best.layout.model_dump() if r.best else None,
                     "mfu": r.mfu, "step_time_s": r.step_time_s,
                     "days_per_trillion_tokens": r.days_per_trillion_tokens, "reason": r.reason}
                    for r in self.rows]}


_GROUPS = {"compute": ("gemm_attn_proj", "gemm_mlp", "attention", "memory_bound", "output_layer"),
           "recompute": ("recompute",), "tp_comm": ("tp_comm",), "cp_comm": ("cp_comm",), "ep_comm": ("ep_comm",),
           "pp_comm": ("pp_comm",), "bubble": ("bubble",), "dp_comm": ("dp_comm",), "optimizer": ("optimizer",),
           "overlap_slowdown": ("overlap_slowdown",)}


def _gpu_seconds_per_token(e: StepEstimate) -> dict[str, float]:
    """GPU-seconds per token by component: constant under perfect scaling; MFU is inversely proportional to
    their sum."""
    return {g: sum(e.time_s.get(k, 0.0) for k in ks) * e.n_gpus / e.tokens_per_step for g, ks in _GROUPS.items()}


def _tier(cluster: ClusterSpec, span: int) -> Optional[tuple[str, int, float]]:
    """The outermost fabric tier a group spread over ``span`` GPUs crosses (name, reach of the tier below,
    oversubscription), as :func:`physics.comm._span_penalty` charges it."""
    prev, hit = cluster.node.nvlink_domain, None
    for t in cluster.fabric.tiers:
        if span > prev:
            hit = (t.name, prev, t.oversubscription)
        prev = t.reach_gpus
    return hit


def falloff_reason(prev: StepEstimate, cur: StepEstimate, prev_cluster: ClusterSpec,
                   cur_cluster: ClusterSpec) -> str:
    """Why MFU falls from ``prev`` to ``cur`` (larger cluster): the component whose GPU-seconds per token grow
    most, with the cause behind it (bubble, DP communication, a fabric tier crossed, batch too small)."""
    a, b = _gpu_seconds_per_token(prev), _gpu_seconds_per_token(cur)
    grow = {k: b[k] - a[k] for k in a}
    k = max(grow, key=lambda x: grow[x])
    L = cur.layout
    share = cur.time_s and sum(cur.time_s.get(x, 0.0) for x in _GROUPS[k]) / cur.step_time_s
    nmb = L.n_microbatches
    why = {"bubble": f"pipeline bubble ({share:.0%} of the step): pp={L.pp} with {nmb} micro-batches",
           "dp_comm": f"DP communication ({share:.0%} of the step): {L.dp * L.cp}-way gradient "
                      f"reductions, {L.tp * L.pp:,} of them at once over all {cur.n_gpus:,} GPUs (each group "
                      f"spread over {L.tp * L.cp * L.dp:,} GPUs of one pipeline stage)",
           "pp_comm": f"pipeline send/recv ({share:.0%} of the step) over pp={L.pp}",
           "tp_comm": f"TP communication ({share:.0%} of the step) at tp={L.tp}",
           "cp_comm": f"CP communication ({share:.0%} of the step) at cp={L.cp}",
           "ep_comm": f"EP all-to-all ({share:.0%} of the step) at ep={L.ep}",
           "optimizer": f"optimizer step ({share:.0%} of the step)",
           "overlap_slowdown": f"compute slowed by the communication hidden behind it ({share:.0%} of the step)",
           "recompute": f"recompute ({L.recompute}) to fit memory",
           "compute": f"less work per GPU: {L.micro_batch * L.seq_len // L.cp:,} tokens per micro-batch per GPU "
                      f"(micro-batch {L.micro_batch}, cp={L.cp}) split {L.tp} ways by TP, so smaller, less efficient "
                      f"GEMMs",
           }[k]
    clauses = [why]
    if k in ("dp_comm", "ep_comm", "cp_comm"):
        span_b = L.tp * L.cp * L.dp
        span_a = prev.layout.tp * prev.layout.cp * prev.layout.dp
        ta, tb = _tier(prev_cluster, span_a), _tier(cur_cluster, span_b)
        if tb and tb != ta:
            over = f", {tb[2]:g}:1 oversubscribed" if tb[2] > 1 else ""
            clauses.append(f"the group now crosses the fabric's {tb[0]} tier (beyond {tb[1]:,} GPUs{over})")
    P = prev.layout
    if (P.tp, P.pp, P.cp, P.ep) != (L.tp, L.pp, L.cp, L.ep):
        short = lambda x: " ".join(layout_label(x).split()[:-4])    # degrees only
        clauses.append(f"the best layout moves from {short(P)} to {short(L)}")
    per_rank = L.global_batch // L.dp
    if (k == "bubble" and nmb < 4 * L.pp) or per_rank <= L.micro_batch or nmb < L.pp:
        clauses.append(f"global batch {L.global_batch} is too small for {cur.n_gpus:,} GPUs "
                       f"({per_rank} sequence(s) per data-parallel rank)")
    return "; ".join(clauses)


def sweep(model: ModelSpec, gpu: str | GPUSpec, sizes: Iterable[int], fabric: Optional[str] = None,
          nic_gbps: Optional[float] = None, nics_per_node: Optional[int] = None,
          gpus_per_node: Optional[int] = None, falloff: float = 0.01, **search_kwargs: Any) -> SweepResult:
    """The best layout for each cluster size (``search`` with the same arguments), with MFU, step time, days
    per trillion tokens and, where MFU falls by more than ``falloff`` (relative) from the previous size, why."""
    t0 = time.perf_counter()
    sizes = list(sizes)
    if not sizes or any(isinstance(s, bool) or int(s) < 1 for s in sizes):
        raise UserError(f"--sweep-gpus needs positive GPU counts, got {sizes}")
    rows: list[SweepRow] = []
    notes: list[str] = []
    prev: Optional[tuple[StepEstimate, ClusterSpec]] = None
    seq = int(search_kwargs.get("seq_len") or model.seq_len)
    gpu_id = gpu if isinstance(gpu, str) else gpu.id
    progress = search_kwargs.pop("progress", None)      # progress(sizes done, as a fraction, of all sizes)
    ordered = sorted(set(int(s) for s in sizes))
    for i, n in enumerate(ordered):
        cl = make_cluster(gpu, n, fabric=fabric, nic_gbps=nic_gbps, nics_per_node=nics_per_node,
                          gpus_per_node=gpus_per_node)
        if progress is not None:
            search_kwargs["progress"] = lambda d, t, i=i: progress(i + d / max(t, 1), len(ordered))
        try:
            res = search(model, cl, top=1, **search_kwargs)
        except UserError as e:
            rows.append(SweepRow(n_gpus=n, reason=str(e)))
            prev = None
            continue
        for note in res.notes:
            if note not in notes:
                notes.append(note)
        e = res.best
        reason = ""
        if prev is not None and e.mfu < prev[0].mfu * (1 - falloff):
            reason = falloff_reason(prev[0], e, prev[1], cl)
        rows.append(SweepRow(n_gpus=n, best=e, layout=layout_label(e.layout), mfu=e.mfu, step_time_s=e.step_time_s,
                             days_per_trillion_tokens=1e12 / e.tokens_per_s / 86400.0, reason=reason))
        prev = (e, cl)
    return SweepResult(model=model.name, gpu=gpu_id, seq_len=seq, rows=rows, seconds=time.perf_counter() - t0,
                       notes=notes)
