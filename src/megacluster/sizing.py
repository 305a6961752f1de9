"""Sizing: the inverse problem. How big a cluster, how long, how much.

Given a model (or a compute budget and a scaling law that picks the compute-optimal model), tokens, a GPU and
any of a deadline (days), a facility power limit (MW), a capital budget (USD), a cluster size and a site,
:func:`size` answers one of four questions:

* **smallest cluster**: model and tokens known and a deadline given: the fewest GPUs whose campaign, failures
  counted, ends within the deadline and within the power and budget limits;
* **how long**: model and tokens known, no deadline: the largest cluster the limits allow, and its days;
* **most tokens**: a model but no token count: the tokens the largest allowed cluster trains by the deadline;
* **largest model**: no model: the compute-optimal model (scaling law) the largest allowed cluster trains by
  the deadline.

Every candidate is a whole campaign (:mod:`megacluster.campaign`): the planner's best layout and batch
(the batch within the batch-size law's bound, :mod:`megacluster.campaign.batch`), the reliability model's
goodput, the facility's peak power and the capital cost. Peak power and capital cost grow linearly with the GPU
count (:func:`per_gpu_limits`), so the power and budget limits give the largest allowed count directly; the
deadline is met by a geometric scan over GPU counts (powers of two times the node) and a bisection between
the last two scanned, on a grid of eight counts per doubling.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Optional, Union

from pydantic import BaseModel, Field

from . import catalog
from .campaign import facility
from .campaign.assumptions import apply_overrides, defaults, value
from .campaign.campaign import (SECONDS_PER_DAY, CampaignResult, batch_assumption, batch_note,
                                campaign_from_step, law_batch_bound, resolve_step)
from .campaign.chinchilla import LAWS, compute_optimal
from .campaign.cost import capex
from .campaign.sites import load_site
from .cluster import make_cluster
from .errors import UserError, short
from .limits import check_number
from .specs import GPUSpec, ModelSpec, StackSpec

MAX_GPUS = 2 ** 23                  # no answer beyond 8M GPUs
STEPS_PER_DOUBLING = 8              # the GPU-count grid: 8, 9, ..., 15 x 2^k nodes
SEARCH_TRIALS = 20                  # reliability trials per candidate while searching (goodput varies < 0.1%)
DAYS_TOLERANCE = 0.02               # the largest-model and most-tokens answers land within 2% of the deadline
INTERVAL_NOTE = ("no interval: the campaign's MFU was given (--mfu), not predicted by the step model, so "
                 "megacluster.uncertainty has no band for it")


class SizeOption(BaseModel):
    """One candidate cluster and its campaign."""

    n_gpus: int
    layout: str
    global_batch: int
    days: float = Field(description="wall-clock days, failures counted")
    days_failure_free: float
    goodput: float
    mfu: float = Field(description="fraction of the BF16 dense peak")
    peak_facility_mw: float
    capex_usd: float
    cost_usd: float = Field(description="cost of the run: amortised capex + electricity (owned)")
    meets: dict[str, bool] = {}
    note: str = ""
    model: Optional[str] = None
    params_total: Optional[float] = None
    tokens: Optional[float] = None


class SizeResult(BaseModel):
    """The answer of :func:`size`. Units are in the field names; ``binding`` names the limit that decides."""

    question: str = Field(description="smallest cluster, how long, most tokens, or largest model")
    feasible: bool = Field(description="every limit is met")
    answer: str
    model: str
    params_total: float
    params_active: float
    tokens: float
    training_flops: float
    gpu: str
    site: str
    n_gpus: int
    layout: str
    global_batch: int
    seq_len: int
    days: float
    days_failure_free: float
    goodput: float
    mfu: float
    peak_facility_mw: float
    capex_usd: float
    cost_usd: float
    binding: str = Field(description="days, max_mw, budget_usd or gpus: the limit that decides the answer")
    binding_text: str
    limits: dict[str, Optional[float]]
    slack: dict[str, str] = {}
    batch_bound: Optional[str] = None
    scaling_law: Optional[str] = None
    options: list[SizeOption] = []
    interval: Optional[dict[str, Any]] = Field(None, description="80% intervals of the answer's figures "
                                               "(megacluster.uncertainty, through the campaign) or null")
    interval_note: str = INTERVAL_NOTE
    notes: list[str] = []
    evaluated: int = Field(0, description="campaigns evaluated to find the answer")
    seconds: float = 0.0
    campaign: Optional[CampaignResult] = Field(None, exclude=True, description="the answer's whole campaign")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the campaign is left out; ``.campaign`` holds it)."""
        return self.model_dump(mode="json")


# ------------------------------------------------------------------------------------------------ limits
def per_gpu_limits(gpu: GPUSpec, site: str = "us-average",
                   overrides: Optional[Mapping[str, float]] = None) -> tuple[float, float]:
    """Peak facility power (MW) and capital cost (USD) per GPU of a cluster of ``gpu`` at ``site``, from the
    campaign's own power and cost functions and assumptions (both are linear in the GPU count)."""
    site_id, figs = load_site(site)
    a = defaults(gpu, figs, site_id)
    apply_overrides(a, overrides or {}, "override")
    fr = {p: value(a, f"gpu_power_fraction_{p}") for p in ("compute", "communication", "optimizer", "bubble",
                                                            "idle")}
    g_peak = facility.peak_gpu_power_w(value(a, "gpu_tdp_w"), fr)
    it_mw = facility.it_power_w(1, g_peak, value(a, "server_overhead_w_per_gpu"),
                                value(a, "network_storage_power_fraction")) / 1e6
    mw = facility.facility_power_w(it_mw, value(a, "pue"))
    cx = capex(1, value(a, "gpu_price_usd"), value(a, "server_cost_ratio"), value(a, "network_capex_share"), it_mw,
               value(a, "facility_usd_per_mw")).capex_usd
    return mw, cx


def _cap(limits: Mapping[str, Optional[float]], mw_per_gpu: float, usd_per_gpu: float,
         per_node: int) -> tuple[int, str]:
    """The largest GPU count (a whole number of nodes) the power, budget and GPU limits allow, and which
    limit sets it ("none" when no limit is given)."""
    caps = {"gpus": limits.get("gpus"), "max_mw": None, "budget_usd": None}
    if limits.get("max_mw") is not None:
        caps["max_mw"] = limits["max_mw"] / mw_per_gpu
    if limits.get("budget_usd") is not None:
        caps["budget_usd"] = limits["budget_usd"] / usd_per_gpu
    given = {k: v for k, v in caps.items() if v is not None}
    if not given:
        return MAX_GPUS, "none"
    key = min(given, key=lambda k: given[k])
    n = int(given[key] // per_node) * per_node if key != "gpus" else int(given[key])
    if n < per_node:
        raise UserError(f"the {_LIMIT_NAMES[key]} allows only {given[key]:,.1f} GPUs, less than one "
                        f"{per_node}-GPU node or NVLink domain; raise it")
    return min(n, MAX_GPUS), key


_LIMIT_NAMES = {"days": "deadline (--days)", "max_mw": "facility power limit (--max-mw)",
                "budget_usd": "capital budget (--budget-usd)", "gpus": "cluster size (--gpus)",
                "none": "no limit"}


def grid(lo: int, hi: int, per_node: int) -> list[int]:
    """GPU counts from ``lo`` to ``hi``: whole nodes, eight per doubling (8..15 x 2^k nodes)."""
    out: set[int] = set()
    k = 0
    while per_node * 2 ** k <= 2 * hi:
        for j in range(STEPS_PER_DOUBLING, 2 * STEPS_PER_DOUBLING):
            nodes = max(1, round(2 ** k * j / STEPS_PER_DOUBLING))
            n = nodes * per_node
            if lo <= n <= hi:
                out.add(n)
        k += 1
    return sorted(out)


# ------------------------------------------------------------------------------------------------ one campaign
class _Ctx:
    """What every candidate shares: the model, tokens, GPU, site, plan constraints and reliability settings."""

    def __init__(self, model: ModelSpec, tokens: float, gpu: GPUSpec, site: str, fabric: Optional[str],
                 gpus_per_node: Optional[int],
                 stack: StackSpec, pins: dict[str, Any], seq_len: int, global_batch: Optional[int],
                 overrides: Mapping[str, float], reliability: bool, trials: int, seed: int,
                 profile: Optional[str], cluster_kw: Optional[Mapping[str, Any]] = None,
                 bounds: Optional[tuple[int, int]] = None):
        self.model, self.tokens, self.gpu, self.site, self.fabric = model, tokens, gpu, site, fabric
        self.gpus_per_node = gpus_per_node
        self.stack, self.pins, self.seq_len, self.global_batch = stack, pins, seq_len, global_batch
        self.overrides, self.reliability, self.trials, self.seed = overrides, reliability, trials, seed
        self.profile, self.cluster_kw, self.fixed_bounds = profile, dict(cluster_kw or {}), bounds
        self.cache: dict[int, Optional[CampaignResult]] = {}
        self.steps: dict[int, tuple[Any, str]] = {}        # GPU count -> (step, plan source)
        self.bound = None

    def run(self, n: int) -> Optional[CampaignResult]:
        """The campaign on ``n`` GPUs (None when the model fits no layout there)."""
        if n in self.cache:
            return self.cache[n]
        cluster = make_cluster(self.gpu, n, fabric=self.fabric, gpus_per_node=self.gpus_per_node, **self.cluster_kw)
        bounds = self.fixed_bounds
        extra = {}
        if self.global_batch is None and bounds is None:
            self.bound = law_batch_bound(self.model, self.tokens, self.seq_len)
            bounds = (self.bound.low_sequences, self.bound.high_sequences)
            extra["global_batch_bound"] = batch_assumption(self.bound)
        if n in self.steps:
            step, src = self.steps[n]
        else:
            try:
                step, src = resolve_step(self.model, cluster, stack=self.stack, global_batch=self.global_batch,
                                         seq_len=self.seq_len, pins=self.pins, global_batch_bounds=bounds)
            except UserError:
                self.cache[n] = None
                return None
            self.steps[n] = (step, src)
        r = campaign_from_step(step, tokens=self.tokens, gpu=self.gpu, n_gpus=n,
                               gpus_per_node=cluster.node.gpus_per_node, site=self.site, overrides=self.overrides,
                               model=self.model, model_name=self.model.name, reliability=self.reliability,
                               reliability_profile=self.profile, reliability_trials=self.trials, seed=self.seed,
                               plan_source=src, extra_assumptions=extra)
        if self.bound is not None:
            r.notes.insert(0, batch_note(step, self.bound))
        self.cache[n] = r
        return r


def _days(r: Optional[CampaignResult]) -> float:
    return math.inf if r is None else r.days


def _option(r: CampaignResult, limits: Mapping[str, Optional[float]], note: str = "") -> SizeOption:
    from .campaign.report import layout_text

    meets = {}
    if limits.get("days") is not None:
        meets["days"] = r.days <= limits["days"] * (1 + 1e-9)
    if limits.get("max_mw") is not None:
        meets["max_mw"] = r.peak_facility_mw <= limits["max_mw"] * (1 + 1e-9)
    if limits.get("budget_usd") is not None:
        meets["budget_usd"] = r.capex_usd <= limits["budget_usd"] * (1 + 1e-9)
    if limits.get("gpus") is not None:
        meets["gpus"] = r.n_gpus <= limits["gpus"]
    return SizeOption(n_gpus=r.n_gpus, layout=layout_text(r.layout).split(",")[0], global_batch=int(
        r.layout.get("global_batch", 0)), days=r.days, days_failure_free=r.days_failure_free, goodput=r.goodput,
        mfu=r.mfu, peak_facility_mw=r.peak_facility_mw, capex_usd=r.capex_usd, cost_usd=r.cost_usd, meets=meets,
        note=note)


# ------------------------------------------------------------------------------------------------ searches
def _smallest_for_days(ctx: _Ctx, days: float, n_hi: int, per_node: int) -> tuple[Optional[int], list[int]]:
    """The smallest grid count up to ``n_hi`` whose campaign ends within ``days`` (None if none does), and
    the counts evaluated. Geometric scan up in doublings from a lower bound (every GPU at its dense peak),
    then bisection on the grid between the last two doublings."""
    peak = ctx.gpu.peak("fp8" if "fp8" in str(ctx.pins.get("precision", "fp8")) else "bf16")
    flops = ctx.tokens * _flops_per_token(ctx.model, ctx.seq_len)
    n_min = max(per_node, int(flops / (peak * days * SECONDS_PER_DAY)))
    pts = grid(per_node, n_hi, per_node)
    if not pts or pts[-1] != n_hi:
        pts.append(n_hi)
    pts = [p for p in pts if p >= min(n_min, n_hi) // 2] or [n_hi]
    doublings = [p for p in pts if p == pts[0] or (p // per_node) & (p // per_node - 1) == 0] + [pts[-1]]
    doublings = sorted(set(doublings))
    seen: list[int] = []
    prev = None
    best = math.inf
    for p in doublings:
        seen.append(p)
        d = _days(ctx.run(p))
        if d > best:               # slower than half as many GPUs: failures outgrow the speed-up; stop
            break
        best = min(best, d)
        if d <= days:
            lo_i = pts.index(prev) if prev is not None else -1
            hi_i = pts.index(p)
            while hi_i - lo_i > 1:                      # invariant: pts[hi_i] meets the deadline
                mid = (lo_i + hi_i) // 2
                seen.append(pts[mid])
                if _days(ctx.run(pts[mid])) <= days:
                    hi_i = mid
                else:
                    lo_i = mid
            return pts[hi_i], seen
        prev = p
    # no count meets the deadline: look for the fastest between the doublings around the fastest scanned
    # (days fall with more GPUs until failures outgrow the speed-up: a ternary search on the grid)
    fastest = min((k for k in ctx.cache if ctx.cache[k] is not None), key=lambda k: ctx.cache[k].days,
                  default=None)
    if fastest is not None:
        lo_i = max(0, pts.index(fastest) - STEPS_PER_DOUBLING) if fastest in pts else 0
        hi_i = min(len(pts) - 1, (pts.index(fastest) if fastest in pts else 0) + STEPS_PER_DOUBLING)
        while hi_i - lo_i > 2:
            m1, m2 = lo_i + (hi_i - lo_i) // 3, hi_i - (hi_i - lo_i) // 3
            seen += [pts[m1], pts[m2]]
            if _days(ctx.run(pts[m1])) <= _days(ctx.run(pts[m2])):
                hi_i = m2
            else:
                lo_i = m1
        for i in range(lo_i, hi_i + 1):
            ctx.run(pts[i])
    return None, seen


def _flops_per_token(model: ModelSpec, seq_len: int) -> float:
    from .physics.flops import model_flops_per_token

    return float(model_flops_per_token(model, seq_len))


# ------------------------------------------------------------------------------------------------ entry point
def size(model: Union[str, ModelSpec, None] = None, tokens: Optional[float] = None,
         gpu: Union[str, GPUSpec] = "h100-sxm",
         *, days: Optional[float] = None, max_mw: Optional[float] = None, budget_usd: Optional[float] = None,
         gpus: Optional[int] = None, compute_flops: Optional[float] = None, law: str = "chinchilla",
         site: str = "us-average", fabric: Optional[str] = None, gpus_per_node: Optional[int] = None,
         framework: Optional[str] = None, precision: str = "bf16", seq_len: Optional[int] = None,
         global_batch: Optional[int] = None,
         overrides: Optional[Mapping[str, float]] = None, reliability: bool = True, trials: int = 200,
         seed: int = 0, reliability_profile: Optional[str] = None, model_name: str = "") -> SizeResult:
    """Size a training campaign (see the module docstring for the four questions).

    ``model``: catalog id, config path or :class:`ModelSpec`; None with ``compute_flops`` (FLOP) picks the
    compute-optimal model of ``law`` (``chinchilla`` or ``llama3``), and None without it asks for the largest
    compute-optimal model the cluster trains in ``days``. ``tokens``: training tokens (None: the most the
    cluster trains in ``days``). ``days``: deadline, wall-clock days with failures. ``max_mw``: facility power
    limit at peak, MW. ``budget_usd``: capital budget (GPUs, servers, network, facility), USD. ``gpus``: the
    cluster size, at most. ``precision``: ``bf16``, ``fp8`` or ``any`` (the planner chooses).
    """
    t0 = time.perf_counter()
    g = catalog.gpu(gpu) if isinstance(gpu, str) else gpu
    for flag, v in (("--days", days), ("--max-mw", max_mw), ("--budget-usd", budget_usd), ("--gpus", gpus),
                    ("--compute", compute_flops), ("--tokens", tokens)):
        check_number(flag, v, integer=flag == "--gpus")    # finite, positive, within limits.py's bounds
    if precision not in ("bf16", "fp8", "any"):
        raise UserError(f"--precision must be bf16, fp8 or any, got {short(precision)}")
    if law not in LAWS:
        raise UserError(f"unknown scaling law {short(law)}; known: {', '.join(LAWS)}")
    if model is not None and compute_flops is not None:
        raise UserError("give a model or a compute budget (--compute), not both")
    if compute_flops is not None and tokens is not None:
        raise UserError("a compute budget fixes the tokens through the scaling law; drop --tokens")
    load_site(site)
    apply_overrides({}, overrides or {}, "check")
    stack = StackSpec(framework=framework) if framework else StackSpec()
    if framework:
        catalog.stack_constants(framework)
    pins: dict[str, Any] = {} if precision == "any" else {"precision": precision}
    limits: dict[str, Optional[float]] = {"days": days, "max_mw": max_mw, "budget_usd": budget_usd,
                                          "gpus": float(gpus) if gpus else None}
    node = make_cluster(g, 8, gpus_per_node=gpus_per_node).node
    per_node = max(node.gpus_per_node, node.nvlink_domain)      # whole servers, whole NVL72 racks
    mw_per_gpu, usd_per_gpu = per_gpu_limits(g, site, overrides)
    n_hi, cap_key = _cap(limits, mw_per_gpu, usd_per_gpu, per_node)
    law_text = None
    notes: list[str] = []

    spec: Optional[ModelSpec] = None
    if isinstance(model, ModelSpec):
        spec = model
    elif model is not None:
        spec = catalog.model(model)
    elif compute_flops is not None:
        spec, tokens = compute_optimal(compute_flops, law, model_name or f"optimal-{compute_flops:.2g}-flop")
        law_text = LAWS[law]
    s = int(seq_len or (spec.seq_len if spec else 8192))

    def ctx_for(m: ModelSpec, t: float, n_trials: int = min(trials, SEARCH_TRIALS)) -> _Ctx:
        return _Ctx(m, t, g, site, fabric, gpus_per_node, stack, pins, s, global_batch, overrides or {}, reliability,
                    n_trials, seed, reliability_profile)

    evaluated = 0
    extra_options: list[SizeOption] = []
    if spec is not None and tokens is not None and days is not None:
        question = "smallest cluster"
        ctx = ctx_for(spec, tokens)
        n, seen = _smallest_for_days(ctx, days, n_hi, per_node)
        evaluated = len(ctx.cache)
        if n is None:
            best_n = min((k for k in ctx.cache if ctx.cache[k] is not None), key=lambda k: ctx.cache[k].days,
                         default=None)
            if best_n is None:
                raise UserError(f"{spec.name} fits no layout on up to {n_hi:,} x {g.id}"
                                + (f" (the {_LIMIT_NAMES[cap_key]})" if cap_key != "none" else ""))
            n = best_n
            binding = cap_key if cap_key != "none" else "days"
        else:
            binding = "days"
        r = ctx.run(n)
        smaller = [k for k in sorted(ctx.cache) if k < n and ctx.cache[k] is not None]
        bigger = [k for k in grid(n + 1, n_hi, per_node)][:1]
    else:
        if cap_key == "none":
            raise UserError("say what limits the cluster: --gpus N, --max-mw MW or --budget-usd USD" +
                            ("" if spec is not None and tokens is not None else
                             ", and --days D for the training time"))
        n = n_hi
        binding = cap_key
        if spec is not None and tokens is not None:
            question = "how long"
            ctx = ctx_for(spec, tokens)
            r = ctx.run(n)
        else:
            if days is None:
                raise UserError("--days is needed to size " + ("the tokens" if spec is not None else "the model") +
                                " a cluster trains")
            question = "most tokens" if spec is not None else "largest model"
            r, ctx, spec, tokens, evaluated, tried = _fill_deadline(spec, n, days, law, ctx_for, g, model_name)
            near = sorted((x for x in tried if r is not None and x.tokens != r.tokens),
                          key=lambda x: abs(math.log(x.training_flops / r.training_flops)))
            for x in [next((x for x in near if x.days > days), None), next((x for x in near if x.days <= days),
                                                                            None)]:
                if x is not None:
                    extra_options.append(_option(x, limits, ("more" if x.training_flops > r.training_flops else
                                                             "less") + " compute evaluated").model_copy(
                        update={"model": x.model, "params_total": x.params_total, "tokens": x.tokens}))
            if question == "largest model":
                law_text = LAWS[law]
        if r is None:
            raise UserError(f"{(spec.name if spec else 'the model')} fits no layout on {n:,} x {g.id}; "
                            "raise the limit or pick a GPU with more memory")
        evaluated = max(evaluated, len(ctx.cache))
        smaller, bigger = [], []
    assert r is not None and spec is not None and tokens is not None
    if reliability and trials > ctx.trials:                     # the answer with the full Monte Carlo
        prior = ctx.cache
        ctx.trials, ctx.cache = trials, {}
        r = ctx.run(r.n_gpus) or r
        ctx.cache = {**prior, r.n_gpus: r}
    ans = _option(r, limits)
    feasible = all(ans.meets.values())
    options = [ans.model_copy(update={"note": "the answer", "model": spec.name,
                                      "params_total": float(spec.params_total), "tokens": float(tokens)})]
    options += sorted(extra_options, key=lambda o: -o.days)
    for k in smaller[-1:]:
        options.insert(0, _option(ctx.cache[k], limits, "next smaller size evaluated"))
    for k in bigger:
        rb = ctx.run(k)
        if rb is not None:
            options.append(_option(rb, limits, "next size up: more margin"))
    options += _other_layouts(spec, r, g, fabric, gpus_per_node, stack, pins, s, limits)
    notes += _why_notes(r)
    interval, interval_note = _interval(r)
    slack = _slack(r, limits)
    text = _answer_text(question, spec, tokens, r, binding, feasible, limits)
    notes += [n_ for n_ in r.notes if "global batch" in n_]
    if ctx.bound is not None and not any("global batch" in n_ for n_ in notes):
        notes.append(ctx.bound.text())
    return SizeResult(
        question=question, feasible=feasible, answer=text, model=spec.name, params_total=float(spec.params_total),
        params_active=float(spec.params_active), tokens=float(tokens), training_flops=r.training_flops, gpu=g.id,
        site=r.site, n_gpus=r.n_gpus, layout=ans.layout, global_batch=ans.global_batch, seq_len=s, days=r.days,
        days_failure_free=r.days_failure_free, goodput=r.goodput, mfu=r.mfu, peak_facility_mw=r.peak_facility_mw,
        capex_usd=r.capex_usd, cost_usd=r.cost_usd, binding=binding,
        binding_text=_binding_text(binding, question, feasible, r, limits), limits=limits, slack=slack,
        batch_bound=ctx.bound.text() if ctx.bound is not None else None, scaling_law=law_text, options=options,
        interval=interval, interval_note=interval_note,
        notes=notes, evaluated=evaluated, seconds=time.perf_counter() - t0, campaign=r)


def _fill_deadline(spec, n, days, law, ctx_for, g, model_name):
    """The tokens (``spec`` given) or compute-optimal model (``spec`` None) that ``n`` GPUs train in ``days``:
    the largest compute found that ends by the deadline. Steps by deadline / days until the deadline is
    bracketed, then bisects the compute geometrically (model shapes are discrete, so days jump with them)
    until within DAYS_TOLERANCE or the bracket is that narrow."""
    peak = g.peak("bf16")
    flops = n * peak * 0.35 * days * SECONDS_PER_DAY * 0.9        # a first guess: 35% MFU, 90% goodput
    evaluated = 0
    ok = bad = None                     # (flops, r, ctx, model, tokens) meeting / missing the deadline
    last = None
    tried: list[CampaignResult] = []
    for _ in range(12):
        if spec is None:
            m, t = compute_optimal(flops, law, model_name or f"optimal-for-{days:g}-days")
        else:
            m, t = spec, flops / _flops_per_token(spec, spec.seq_len)
        ctx = ctx_for(m, t)
        r = ctx.run(n)
        evaluated += 1
        last = (None, ctx, m, t)
        if r is not None:
            tried.append(r)
        d = math.inf if r is None else r.days
        if d <= days:
            if ok is None or flops > ok[0]:
                ok = (flops, r, ctx, m, t)
            if d >= days * (1 - DAYS_TOLERANCE):
                break
        elif bad is None or flops < bad[0]:
            bad = (flops, r, ctx, m, t)
        if ok is not None and bad is not None:
            if bad[0] / ok[0] < 1 + DAYS_TOLERANCE:
                break
            flops = math.sqrt(ok[0] * bad[0])
        else:
            flops *= 0.5 if r is None else min(4.0, max(0.25, days / d))
    if ok is None:
        return (*last, evaluated, tried)
    return (*ok[1:], evaluated, tried)


def largest_model_for_days(cluster: Any, days: float, *, site: str, law: str = "chinchilla",
                           stack: Optional[StackSpec] = None, pins: Optional[Mapping[str, Any]] = None,
                           seq_len: Optional[int] = None, global_batch: Optional[int] = None,
                           global_batch_bounds: Optional[tuple[int, int]] = None,
                           overrides: Optional[Mapping[str, float]] = None, reliability: bool = True,
                           trials: int = 200, seed: int = 0, reliability_profile: Optional[str] = None,
                           model_name: str = "") -> tuple[ModelSpec, float, Any]:
    """The largest compute-optimal model (``law``) that ``cluster`` (a ClusterSpec, all of its GPUs) trains
    within ``days``, failures counted, with the plan's constraints (the named scenarios' sizing). Returns
    (model, tokens, step estimate of its plan)."""
    node = cluster.node
    kw = {"nic_gbps": node.nic_gbps, "nics_per_node": node.nics_per_node}
    s = int(seq_len or 8192)

    def ctx_for(m: ModelSpec, t: float, n_trials: int = min(trials, SEARCH_TRIALS)) -> _Ctx:
        return _Ctx(m, t, cluster.gpu, site, cluster.fabric.id, node.gpus_per_node, stack or StackSpec(),
                    dict(pins or {}), int(seq_len or m.seq_len), global_batch, overrides or {}, reliability,
                    n_trials, seed, reliability_profile, cluster_kw=kw,
                    bounds=tuple(global_batch_bounds) if global_batch_bounds else None)

    r, ctx, model, tokens, _, _ = _fill_deadline(None, cluster.n_gpus, days, law, ctx_for, cluster.gpu,
                                                 model_name or f"optimal-for-{days:g}-days")
    if r is None:
        raise UserError(f"no compute-optimal model fits {cluster.n_gpus:,} x {cluster.gpu.id} (seq {s})")
    return model, tokens, ctx.steps[cluster.n_gpus][0]


def _other_layouts(spec, r, g, fabric, gpus_per_node, stack, pins, s, limits) -> list[SizeOption]:
    """The search's runner-up layouts on the answer's GPU count, their days at the answer's goodput."""
    from .search import search

    L = r.layout
    try:
        res = search(spec, make_cluster(g, r.n_gpus, fabric=fabric, gpus_per_node=gpus_per_node),
                     global_batch=int(L["global_batch"]),
                     seq_len=s, stack=stack, top=3, pins=pins)
    except UserError:
        return []
    out = []
    for e in res.top[1:]:
        ff = r.tokens / e.tokens_per_s / SECONDS_PER_DAY
        o = SizeOption(n_gpus=r.n_gpus, layout=e.layout.label(), global_batch=e.layout.global_batch,
                       days=ff / r.goodput, days_failure_free=ff, goodput=r.goodput, mfu=float(e.mfu),
                       peak_facility_mw=r.peak_facility_mw, capex_usd=r.capex_usd,
                       cost_usd=r.cost_usd * (ff / r.days_failure_free), note="runner-up layout, same GPUs")
        if limits.get("days") is not None:
            o.meets["days"] = o.days <= limits["days"]
        out.append(o)
    return out


def _interval(r: CampaignResult) -> tuple[Optional[dict[str, Any]], str]:
    """The answer's intervals where the campaign carries them (``intervals``, from megacluster.uncertainty),
    else None and the reason."""
    iv = getattr(r, "intervals", None)
    if not iv:
        return None, INTERVAL_NOTE
    keep = {k: list(v) for k, v in iv.items() if k in ("days", "days_failure_free", "mfu", "gpu_hours")}
    basis = getattr(r, "interval_basis", None)
    if not basis:
        return keep or None, "80% intervals of the step model's figures (megacluster.uncertainty)"
    from .uncertainty import basis_text

    return keep or None, basis_text(basis) + "; days hold the goodput fixed"


def _why_notes(r: CampaignResult) -> list[str]:
    """What holds the answer back, when it is the batch bound or failures (computed from the campaign)."""
    out = []
    L = r.layout
    dp, mb, pp, gb = int(L.get("dp", 1)), int(L.get("micro_batch", 1)), int(L.get("pp", 1)), \
        int(L.get("global_batch", 1))
    nmb = gb // max(1, dp * mb)
    if pp > 1 and nmb < pp:
        out.append(f"the global batch of {gb:,} sequences gives each of the {dp:,} pipelines {nmb} micro-batch(es) for "
                   f"{pp} stages: the pipeline bubble takes much of each step (MFU {r.mfu:.1%}); a batch beyond the "
                   f"batch-size law's bound would fill the pipelines but, by the law, need more tokens for the same "
                   f"loss")
    if r.goodput < 0.8 and r.interruptions:
        out.append(f"goodput {r.goodput:.1%}: {r.interruptions:,.0f} interruptions expected on {r.n_gpus:,} GPUs "
                   f"(reliability model: per-GPU failure rates of its profile, scaled to this count), so failures "
                   f"add {1 / r.goodput - 1:.0%} to the failure-free {r.days_failure_free:,.1f} days")
    return out


def _slack(r: CampaignResult, limits: Mapping[str, Optional[float]]) -> dict[str, str]:
    out = {}
    if limits.get("days") is not None:
        out["days"] = f"{r.days:,.1f} of {limits['days']:g} days"
    if limits.get("max_mw") is not None:
        out["max_mw"] = f"{r.peak_facility_mw:,.1f} of {limits['max_mw']:,.1f} MW at peak"
    if limits.get("budget_usd") is not None:
        out["budget_usd"] = f"${r.capex_usd / 1e9:,.2f}B of ${limits['budget_usd'] / 1e9:,.2f}B capex"
    if limits.get("gpus") is not None:
        out["gpus"] = f"{r.n_gpus:,} of {int(limits['gpus']):,} GPUs"
    return out


def _binding_text(binding: str, question: str, feasible: bool, r: CampaignResult,
                  limits: Mapping[str, Optional[float]]) -> str:
    if question == "smallest cluster" and feasible:
        return (f"the deadline: {r.n_gpus:,} GPUs is the smallest count on the grid that ends within "
                f"{limits['days']:g} days ({r.days:,.1f}); power and budget leave room")
    if question == "smallest cluster" and binding == "days":
        return (f"no cluster ends in {limits['days']:g} days: the fastest found takes {r.days:,.1f} days on "
                f"{r.n_gpus:,} GPUs (goodput {r.goodput:.1%}); twice as many GPUs were slower (failures grow "
                f"faster than the step speeds up)")
    if question == "smallest cluster":
        return (f"no cluster within the {_LIMIT_NAMES[binding]} ends in {limits['days']:g} days: the fastest "
                f"takes {r.days:,.1f} days on {r.n_gpus:,} GPUs")
    return f"the {_LIMIT_NAMES[binding]} sets the cluster at {r.n_gpus:,} GPUs"


def _answer_text(question: str, spec: ModelSpec, tokens: float, r: CampaignResult, binding: str, feasible: bool,
                 limits: Mapping[str, Optional[float]]) -> str:
    what = f"{spec.name} ({spec.params_total / 1e9:,.0f}B parameters) on {tokens / 1e12:,.2f}T tokens"
    where = (f"{r.n_gpus:,} x {r.gpu} train {what} in {r.days:,.1f} days (failures counted), at "
             f"{r.peak_facility_mw:,.1f} MW peak facility power and ${r.capex_usd / 1e9:,.2f}B capex")
    if question == "smallest cluster":
        return ("smallest cluster: " if feasible else "no cluster meets every limit; the fastest allowed: ") + where
    if question == "largest model":
        return f"largest compute-optimal model: {where}"
    if question == "most tokens":
        return f"most tokens: {where}"
    return f"how long: {where}"
