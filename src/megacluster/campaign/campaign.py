"""A campaign: one model trained on a token budget by a cluster at a site, from the step model to days,
megawatts, water, carbon and dollars.

:func:`run_campaign` resolves the plan (given layout, plan file, or searched), then
:func:`campaign_from_step` turns one step estimate into the whole run. Every input figure is an
:class:`~megacluster.campaign.assumptions.Assumption` (value, unit, source) and is reported with the result.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from pydantic import BaseModel, Field

from .. import catalog
from ..errors import UserError, short
from ..limits import MAX, check_number, why
from ..specs import ClusterSpec, GPUSpec, Layout, ModelSpec, StackSpec
from . import carbon, cost, energy, facility
from .assumptions import Assumption, apply_overrides, defaults, value
from .sites import load_site

SECONDS_PER_DAY = 86400.0


class CampaignResult(BaseModel):
    """The whole training run. Units are in the field names; ``mfu`` and ``goodput`` are fractions."""

    model: str
    gpu: str
    n_gpus: int
    site: str
    tokens: float
    plan_source: str = Field(description="searched, plan file, or given layout")
    layout: dict[str, Any]
    # time
    days: float = Field(description="wall-clock days including failures")
    days_failure_free: float
    goodput: float = Field(description="productive fraction of the wall clock")
    interruptions: Optional[float] = None
    gpu_hours: float
    step_time_s: float
    tokens_per_s: float
    # compute
    training_flops: float
    model_flops_per_token: float
    params_total: Optional[float] = None
    mfu: float = Field(description="model FLOPs utilisation used for the campaign (fraction of dense peak)")
    mfu_step_model: float = Field(description="MFU predicted by the step model")
    mfu_pinned: bool = False
    mfu_effective: float = Field(description="training FLOPs / (GPUs x dense peak x wall clock): MFU x goodput")
    # power and energy
    mean_gpu_power_w: float
    peak_gpu_power_w: float
    avg_it_mw: float
    peak_it_mw: float
    avg_facility_mw: float
    peak_facility_mw: float
    energy_it_mwh: float
    energy_mwh: float = Field(description="facility energy, MWh")
    # water
    water_onsite_liters: float
    water_onsite_gallons_per_day: float
    water_offsite_liters: float
    water_total_liters: float
    # carbon
    co2e_operational_tonnes: float
    co2e_embodied_tonnes: Optional[float] = None
    co2e_tonnes: float
    co2e_tdp_method_tonnes: float = Field(description="GPU-hours x TDP x PUE x grid (Llama model-card method)")
    # cost
    gpu_capex_usd: float
    server_capex_usd: float
    network_capex_usd: float
    facility_capex_usd: float
    capex_usd: float
    capex_amortised_usd: float
    electricity_usd: float
    cloud_usd: Optional[float] = None
    cost_basis: str = Field(description="owned (amortised capex + electricity) or cloud")
    cost_usd: float
    assumptions: dict[str, Assumption]
    notes: list[str] = []
    scenario: Optional[str] = None
    published: dict[str, Any] = {}
    # 80% intervals of the step model's figures (uncertainty.py): days, days_failure_free, step_time_s,
    # tokens_per_s, mfu, gpu_hours -> [lo, hi]; empty where the MFU is pinned or the step has no layout
    intervals: dict[str, list[float]] = {}
    interval_basis: Optional[dict[str, Any]] = None
    # the step's phases (seconds, at the campaign's MFU) and the facility power in each phase, MW
    step_phases_s: dict[str, float] = {}
    phase_facility_mw: dict[str, float] = {}
    # one simulated run of the reliability model (reliability.simulate._example_run; left out of the JSON)
    failure_timeline_hours: Optional[dict[str, Any]] = Field(default=None, exclude=True)


def _rescale_to_mfu(step_time_s: float, phases_s: Mapping[str, float], mfu_model: float,
                    mfu_pin: float) -> tuple[float, dict[str, float]]:
    """Step time and phases when the campaign runs at a pinned MFU (phases keep their shares)."""
    k = mfu_model / mfu_pin
    return step_time_s * k, {p: t * k for p, t in phases_s.items()}


def _reliability(n_gpus: int, days_ff: float, profile: Optional[str], model: Optional[ModelSpec],
                 trials: int, seed: int, progress: Optional[Any] = None) -> Optional[Any]:
    try:
        from ..reliability import simulate_reliability
    except ImportError:
        return None
    kw: dict[str, Any] = {"trials": trials, "seed": seed, "model": model, "progress": progress}
    if profile:
        kw["profile"] = profile
    return simulate_reliability(n_gpus, days_ff, **kw)


def campaign_from_step(step: Any, *, tokens: float, gpu: GPUSpec, n_gpus: int, gpus_per_node: int,
                       site: str = "us-average", overrides: Optional[Mapping[str, float]] = None,
                       override_source: str = "override", model: Optional[ModelSpec] = None,
                       model_name: str = "", embodied: bool = False, cost_basis: str = "owned",
                       reliability: bool = True, reliability_profile: Optional[str] = None,
                       reliability_trials: int = 200, seed: int = 0, plan_source: str = "given layout",
                       extra_assumptions: Optional[Mapping[str, Assumption]] = None,
                       progress: Optional[Any] = None) -> CampaignResult:
    """Turn one step estimate (a ``StepEstimate`` or any object with ``step_time_s``, ``tokens_per_step``,
    ``mfu``, ``model_flops_per_token``, ``phases_s``, ``layout``) into the whole campaign.

    ``tokens``: training tokens. ``overrides``: assumption name -> value (see ``assumptions.BOUNDS``); ``mfu``
    pins the MFU (the step's phases are stretched to it), ``goodput`` replaces the reliability simulation.
    ``progress(trials done, trials)`` follows the reliability Monte Carlo.
    """
    check_number("--tokens", tokens, "tokens")
    if cost_basis not in ("owned", "cloud"):
        raise UserError(f"cost basis must be 'owned' or 'cloud', got {short(cost_basis)}")
    site_id, site_figs = load_site(site)
    a = defaults(gpu, site_figs, site_id)
    if extra_assumptions:
        a.update(extra_assumptions)
    apply_overrides(a, overrides or {}, override_source)
    notes: list[str] = []
    if "hot spares" in plan_source:
        notes.append("hot-spare GPUs are counted in GPU-hours, power and cost as if they trained (an upper "
                     "bound: idle spares draw less)")

    # ---- time per step (optionally at a pinned MFU)
    mfu_model = float(step.mfu)
    step_time = float(step.step_time_s)
    phases = {k: float(v) for k, v in dict(step.phases_s).items()}
    pinned = "mfu" in a
    if pinned:
        mfu = value(a, "mfu")
        step_time, phases = _rescale_to_mfu(step_time, phases, mfu_model, mfu)
        notes.append(f"MFU pinned at {mfu:.1%} ({a['mfu'].source}); the step model predicts {mfu_model:.1%}")
    else:
        mfu = mfu_model
    tokens_per_s = float(step.tokens_per_step) / step_time
    flops_per_token = float(step.model_flops_per_token)
    training_flops = flops_per_token * tokens
    ff_s = tokens / tokens_per_s
    ff_days = ff_s / SECONDS_PER_DAY
    if tokens < float(step.tokens_per_step):
        raise UserError(f"--tokens {tokens:.3g} is less than one training step ({float(step.tokens_per_step):,.0f} "
                        "tokens); give at least that")
    if ff_days > MAX["days"][0]:
        raise UserError(f"{tokens:.3g} tokens at {tokens_per_s:,.0f} tokens/s take {ff_days:,.0f} days, more "
                        f"than megacluster plans ({why('days')}); give fewer --tokens or more --gpus")

    # ---- failures
    interruptions = rel = None
    idle_h = 0.0  # hours the cluster waits (restarts, checkpoint stalls): counted at idle power
    if "goodput" in a:
        goodput = value(a, "goodput")
    elif reliability:
        rel = _reliability(n_gpus, ff_days, reliability_profile, model, reliability_trials, seed, progress)
        if rel is None:
            goodput = 1.0
            notes.append("reliability model unavailable: failures not included (goodput 1.0)")
        else:
            goodput = float(rel.goodput_mean)
            interruptions = float(rel.interruptions_mean)
            idle_h = float(getattr(rel, "restart_hours_mean", 0.0) or 0.0) + \
                float(getattr(rel, "checkpoint_stall_hours_mean", 0.0) or 0.0)
            prof = reliability_profile or "default"
            a["goodput"] = Assumption(
                value=goodput, unit="fraction of wall clock",
                source=f"computed: megacluster.reliability Monte Carlo, profile {prof}, {reliability_trials} "
                       f"trials, checkpoint every {float(rel.checkpoint_interval_minutes):.0f} min")
    else:
        goodput = 1.0
        notes.append("failures not included (--no-failures)")
    wall_days = ff_days / goodput
    wall_h = wall_days * 24.0
    gpu_hours = n_gpus * wall_h

    # ---- power and energy: the step's phases over the training time (recomputed work lost to failures
    # included); restarts and checkpoint stalls at idle power
    fr = {p: value(a, f"gpu_power_fraction_{p}") for p in ("compute", "communication", "optimizer", "bubble",
                                                            "idle")}
    tdp = value(a, "gpu_tdp_w")
    pp = energy.power_profile(n_gpus, tdp, phases, fr, value(a, "server_overhead_w_per_gpu"),
                              value(a, "network_storage_power_fraction"))
    pue = value(a, "pue")
    idle_h = min(idle_h, wall_h - ff_days * 24.0)
    it_mwh = energy.it_energy_mwh(pp.it_training_mw, wall_h - idle_h, pp.it_idle_mw, idle_h)
    avg_it_mw = it_mwh / wall_h
    fac_mwh = energy.facility_energy_mwh(it_mwh, pue)

    # ---- water
    onsite_l = facility.onsite_water_l(it_mwh * 1000.0, value(a, "wue_l_per_kwh"))
    offsite_l = facility.offsite_water_l(fac_mwh * 1000.0, value(a, "grid_water_l_per_kwh"))

    # ---- carbon
    op_t = carbon.operational_co2e_tonnes(fac_mwh, value(a, "grid_gco2_per_kwh"))
    emb_t = None
    if embodied:
        emb_t = carbon.embodied_co2e_tonnes(n_gpus, gpus_per_node, wall_h, value(a, "embodied_gpu_kgco2e"),
                                            value(a, "embodied_server_kgco2e"), value(a, "embodied_life_years"),
                                            value(a, "embodied_use_fraction"))
    tdp_t = carbon.tdp_method_co2e_tonnes(gpu_hours, tdp, pue, value(a, "grid_gco2_per_kwh"))

    # ---- cost
    cx = cost.capex(n_gpus, value(a, "gpu_price_usd"), value(a, "server_cost_ratio"),
                    value(a, "network_capex_share"), pp.peak_it_mw, value(a, "facility_usd_per_mw"))
    amort = cost.amortised_usd(cx.gpu_capex_usd + cx.server_capex_usd + cx.network_capex_usd, wall_h,
                               value(a, "hardware_life_years")) + \
        cost.amortised_usd(cx.facility_capex_usd, wall_h, value(a, "facility_life_years"))
    elec = cost.electricity_usd(fac_mwh, value(a, "electricity_usd_per_kwh"))
    cloud = cost.cloud_usd(gpu_hours, value(a, "cloud_usd_per_gpu_hour")) if "cloud_usd_per_gpu_hour" in a else None
    if cost_basis == "cloud":
        if cloud is None:
            raise UserError(f"no cloud price for GPU {gpu.id}; give --cloud-usd-per-gpu-hour")
        total = cloud
    else:
        total = amort + elec

    layout = step.layout.model_dump() if hasattr(step.layout, "model_dump") else dict(step.layout or {})
    return CampaignResult(
        model=model_name or (model.name if model else ""), gpu=gpu.id, n_gpus=n_gpus, site=site_id,
        tokens=tokens, plan_source=plan_source, layout=layout,
        days=wall_days, days_failure_free=ff_days, goodput=goodput, interruptions=interruptions,
        gpu_hours=gpu_hours, step_time_s=step_time, tokens_per_s=tokens_per_s,
        training_flops=training_flops, model_flops_per_token=flops_per_token,
        params_total=float(model.params_total) if model else None,
        mfu=mfu, mfu_step_model=mfu_model, mfu_pinned=pinned, mfu_effective=mfu * goodput,
        mean_gpu_power_w=pp.mean_gpu_power_training_w, peak_gpu_power_w=pp.peak_gpu_power_w,
        avg_it_mw=avg_it_mw, peak_it_mw=pp.peak_it_mw,
        avg_facility_mw=avg_it_mw * pue, peak_facility_mw=pp.peak_it_mw * pue,
        energy_it_mwh=it_mwh, energy_mwh=fac_mwh,
        water_onsite_liters=onsite_l,
        water_onsite_gallons_per_day=facility.liters_to_gallons(onsite_l) / wall_days,
        water_offsite_liters=offsite_l, water_total_liters=onsite_l + offsite_l,
        co2e_operational_tonnes=op_t, co2e_embodied_tonnes=emb_t, co2e_tonnes=op_t + (emb_t or 0.0),
        co2e_tdp_method_tonnes=tdp_t,
        gpu_capex_usd=cx.gpu_capex_usd, server_capex_usd=cx.server_capex_usd,
        network_capex_usd=cx.network_capex_usd, facility_capex_usd=cx.facility_capex_usd,
        capex_usd=cx.capex_usd, capex_amortised_usd=amort, electricity_usd=elec, cloud_usd=cloud,
        cost_basis=cost_basis, cost_usd=total, assumptions=a, notes=notes, step_phases_s=phases,
        phase_facility_mw={p: mw * pue for p, mw in energy.it_mw_by_phase(
            n_gpus, tdp, {**{p: fr["compute"] for p in phases}, **fr},     # a phase without its own: busy
            value(a, "server_overhead_w_per_gpu"), value(a, "network_storage_power_fraction")).items()},
        failure_timeline_hours=getattr(rel, "example_run", None),
        **_intervals(step, gpu, model, pinned, dict(days=wall_days, days_failure_free=ff_days, step_time_s=step_time,
                                                    gpu_hours=gpu_hours), dict(tokens_per_s=tokens_per_s, mfu=mfu)))


def _intervals(step: Any, gpu: GPUSpec, model: Optional[ModelSpec], pinned: bool, times: dict[str, float],
               rates: dict[str, float]) -> dict[str, Any]:
    """``intervals`` and ``interval_basis`` of a campaign: the step's 80% band (uncertainty.py) applied to its
    times (days scale as the step time: goodput held) and rates; none where the MFU is pinned (the step time is
    then not the step model's) or the step lacks a layout, stack or model."""
    if pinned or model is None or not isinstance(getattr(step, "layout", None), Layout) or \
            getattr(step, "stack", None) is None:
        return {}
    from ..uncertainty import estimate_band

    b = estimate_band(step, model, gpu)
    return {"intervals": {**{k: b.time(v) for k, v in times.items()}, **{k: b.rate(v) for k, v in rates.items()}},
            "interval_basis": b.basis()}


def resolve_step(model: ModelSpec, cluster: ClusterSpec, layout: Optional[Layout] = None,
                 stack: Optional[StackSpec] = None, global_batch: Optional[int] = None,
                 seq_len: Optional[int] = None, pins: Optional[Mapping[str, Any]] = None,
                 global_batch_bounds: Optional[tuple[int, int]] = None) -> tuple[Any, str]:
    """The step estimate of the plan: the given layout's, or the best searched one. Returns (step, source)."""
    stack = stack or StackSpec()
    if layout is not None:
        from ..estimate import estimate

        est = estimate(model, cluster, layout, stack=stack)
        if hasattr(est, "fits") and not est.fits:
            raise UserError(f"the plan's layout does not fit in GPU memory ({est.memory_gib_per_gpu:.1f} GiB "
                            f"per GPU needed, {cluster.gpu.hbm_gib:g} available)")
        return est, "given layout"
    from ..search import search

    kw = dict(pins or {})
    bounds = tuple(global_batch_bounds) if global_batch_bounds else None
    best, best_n, first_err = None, cluster.n_gpus, None
    for n in usable_gpu_counts(cluster.n_gpus, cluster.node.gpus_per_node):
        try:
            res = search(model, cluster.model_copy(update={"n_gpus": n}), global_batch=global_batch,
                         seq_len=seq_len or model.seq_len, stack=stack, top=1, pins=kw, global_batch_bounds=bounds)
        except UserError as e:
            first_err = first_err or e
            continue
        if best is None or res.best.tokens_per_s > best.tokens_per_s * (1 + 1e-9):
            best, best_n = res.best, n
    if best is None:
        raise first_err
    if best_n < cluster.n_gpus:
        return best, (f"searched; trains on {best_n:,} of the {cluster.n_gpus:,} GPUs (faster than any layout "
                      f"of all of them), {cluster.n_gpus - best_n:,} kept as hot spares")
    return best, "searched"


def law_batch_bound(model: ModelSpec, tokens: float, seq_len: Optional[int] = None):
    """The global-batch bound (:mod:`megacluster.campaign.batch`) of training ``model`` on ``tokens`` tokens."""
    from ..physics.flops import model_flops_per_token
    from .batch import batch_bound

    s = int(seq_len or model.seq_len)
    return batch_bound(float(model_flops_per_token(model, s)) * tokens, s)


def batch_assumption(bound: Any) -> Assumption:
    """The batch bound as a campaign assumption (printed with its source)."""
    return Assumption(value=f"{bound.low_sequences:,}-{bound.high_sequences:,} sequences", unit="global batch",
                      source=f"{bound.text()}; {bound.source}; half of B_opt and up: the paper's near-optimal band")


SPARE_FRACTION = 0.05   # at most this share of a cluster is left out of the job as hot spares


def usable_gpu_counts(n_gpus: int, gpus_per_node: int) -> list[int]:
    """GPU counts a campaign may train on: all of them, or all but up to 5% kept as hot spares, rounded
    down to multiples of 2^k nodes so that the parallel degrees can divide them (100,000 = 2^5 x 5^5 has no
    pipeline depth of 16 with TP 8; 98,304 = 2^15 x 3 does). The spares also give a restarted job healthy
    hosts to replace failed ones."""
    out = [n_gpus]
    q = gpus_per_node
    while q * 2 <= n_gpus:
        q *= 2
        m = n_gpus - n_gpus % q
        if m >= (1 - SPARE_FRACTION) * n_gpus and m not in out:
            out.append(m)
    return out


def run_campaign(model: Union[str, ModelSpec], tokens: float, cluster: ClusterSpec, site: str = "us-average",
                 layout: Optional[Layout] = None, stack: Optional[StackSpec] = None,
                 global_batch: Optional[int] = None, seq_len: Optional[int] = None,
                 pins: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> CampaignResult:
    """The whole campaign of ``model`` on ``tokens`` tokens on ``cluster`` at ``site``.

    The plan is ``layout`` when given, otherwise searched (``global_batch``, ``seq_len``, ``pins`` pass to
    :func:`megacluster.search.search`). Further keyword arguments go to :func:`campaign_from_step`
    (``overrides``, ``embodied``, ``cost_basis``, ``reliability``, ``reliability_profile``, ...).
    """
    spec = catalog.model(model) if isinstance(model, str) else model
    load_site(site)                          # bad site or override: fail before the search
    apply_overrides({}, kwargs.get("overrides") or {}, "check")
    bounds = None
    if layout is None and global_batch is None and not (pins and "global_batch" in pins):
        bound = law_batch_bound(spec, tokens, seq_len)
        bounds = (bound.low_sequences, bound.high_sequences)
        extra = dict(kwargs.pop("extra_assumptions", None) or {})
        extra["global_batch_bound"] = batch_assumption(bound)
        kwargs["extra_assumptions"] = extra
    step, source = resolve_step(spec, cluster, layout, stack, global_batch, seq_len, pins,
                                global_batch_bounds=bounds)
    kwargs.setdefault("plan_source", source)
    r = campaign_from_step(step, tokens=tokens, gpu=cluster.gpu, n_gpus=cluster.n_gpus,
                           gpus_per_node=cluster.node.gpus_per_node, site=site, model=spec,
                           model_name=kwargs.pop("model_name", spec.name), **kwargs)
    if bounds is not None:
        r.notes.insert(0, batch_note(step, bound))
    return r


def batch_note(step: Any, bound: Any) -> str:
    """One line: the global batch the plan took and the law's bound it was chosen within."""
    L = step.layout
    return (f"global batch {L.global_batch:,} sequences ({L.global_batch * L.seq_len / 1e6:,.1f}M tokens), chosen by "
            f"the search within the {bound.text()}")
