"""Named scenarios (``catalog/data/scenarios.yaml``): the supercomputers in the news, as campaigns with
their sources, compared with the published figures."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from pydantic import ValidationError

from .. import catalog
from ..errors import UserError, unknown_name
from ..specs import ModelSpec, StackSpec
from . import carbon, chinchilla
from .assumptions import Assumption, apply_overrides, value
from .sites import load_site
from .campaign import CampaignResult, batch_assumption, batch_note, campaign_from_step, law_batch_bound, resolve_step


def scenario_names() -> list[str]:
    return [s["id"] for s in catalog.load("scenarios")["scenarios"]]


def get_scenario(name: str) -> dict[str, Any]:
    entries = {s["id"]: s for s in catalog.load("scenarios")["scenarios"]}
    if name not in entries:
        e = unknown_name("scenario", name, entries)
        raise UserError(str(e).replace("`megacluster catalog` lists", "`megacluster catalog scenarios` lists"))
    return entries[name]


def scenario_cluster(sc: Mapping[str, Any]):
    from ..cluster import make_cluster

    c = sc["cluster"]
    return make_cluster(c["gpu"], int(c["gpus"]), fabric=c.get("fabric"), nic_gbps=c.get("nic_gbps"),
                        nics_per_node=c.get("nics_per_node"), gpus_per_node=c.get("gpus_per_node"))


def _spec_from(sc: Mapping[str, Any]) -> Optional[ModelSpec]:
    m = sc["model"]
    if isinstance(m, str):
        return catalog.model(m)
    if "spec" in m:
        try:
            return ModelSpec(**m["spec"], source=str(m.get("source", "")).strip())
        except ValidationError as e:
            raise UserError(catalog.validation_message(e, f"scenario {sc['id']} model")) from None
    return None


def _stack(plan: Mapping[str, Any]) -> Optional[StackSpec]:
    """The software stack a scenario's plan names (``plan.framework``, a catalog stack id), or the default."""
    fw = plan.get("framework")
    if fw is None:
        return None
    catalog.stack_constants(str(fw))          # an unknown stack is one clear error line
    return StackSpec(framework=str(fw))


def plan_batch(plan: Mapping[str, Any], model: ModelSpec, tokens: float) -> tuple[Optional[tuple[int, int]], Any]:
    """A scenario plan's global-batch bounds: its own (``global_batch`` or ``global_batch_bounds``), else the
    batch-size law's (:mod:`megacluster.campaign.batch`). Returns (bounds or None, the law's bound or None)."""
    if plan.get("global_batch") is not None or plan.get("global_batch_bounds"):
        return (tuple(plan["global_batch_bounds"]) if plan.get("global_batch_bounds") else None), None
    bound = law_batch_bound(model, tokens, plan.get("seq_len"))
    return (bound.low_sequences, bound.high_sequences), bound


def comparisons(r: CampaignResult, published: Mapping[str, Any]) -> dict[str, Any]:
    """Published figure vs modelled one, with whether it falls in the published band."""
    out: dict[str, Any] = {}
    for key, p in published.items():
        if key == "co2e_tdp_method_at_published_gpu_hours_tonnes":
            a = r.assumptions
            got = carbon.tdp_method_co2e_tonnes(float(p["gpu_hours"]), value(a, "gpu_tdp_w"), value(a, "pue"),
                                                value(a, "grid_gco2_per_kwh"))
        else:
            got = getattr(r, key)
        if "range" in p:
            lo, hi = (float(x) for x in p["range"])
        else:
            v, tol = float(p["value"]), float(p.get("tolerance", 0.0))
            lo, hi = v * (1 - tol), v * (1 + tol)
        out[key] = {"published": p.get("range", p.get("value")), "tolerance": p.get("tolerance"),
                    "low": lo, "high": hi, "modelled": got, "within": bool(lo <= got <= hi),
                    "source": str(p.get("source", "")).strip()}
    return out


_SIZE_LIMITS = ("days", "max_mw", "budget_usd", "gpus", "compute_flops", "tokens")


def size_scenario(name: str, *, site: Optional[str] = None, reliability: bool = True, trials: int = 200,
                  seed: int = 0, **more: Any):
    """Answer a sizing scenario (one with a ``size`` entry) with :func:`megacluster.sizing.size`; each limit's
    source becomes a note."""
    from ..sizing import size

    sc = get_scenario(name)
    z = sc.get("size")
    if z is None:
        raise UserError(f"scenario {name} is a campaign on a given cluster, not a sizing question; run "
                        f"`megacluster campaign --scenario {name}` (`megacluster catalog scenarios` lists both kinds)")
    lim = {k: float(z[k]["value"] if isinstance(z[k], dict) else z[k]) for k in _SIZE_LIMITS if k in z}
    if "gpus" in lim:
        lim["gpus"] = int(lim["gpus"])
    kw = {k: z[k] for k in ("law", "precision", "fabric", "gpus_per_node", "framework", "seq_len") if k in z}
    kw.update(more)
    r = size(z.get("model"), lim.pop("tokens", None), z["gpu"], site=site or sc["site"], reliability=reliability,
             trials=trials, seed=seed, model_name=z.get("model_name", f"{name}-optimal"), **lim, **kw)
    srcs = [f"{k}: {' '.join(str(z[k]['source']).split())}" for k in _SIZE_LIMITS
            if isinstance(z.get(k), dict) and z[k].get("source")]
    if z.get("gpu_source"):
        srcs.append(f"gpu: {' '.join(str(z['gpu_source']).split())}")
    r.notes = srcs + r.notes
    return r


def run_scenario(name: str, *, site: Optional[str] = None, overrides: Optional[Mapping[str, float]] = None,
                 embodied: bool = False, cost_basis: str = "owned", reliability: bool = True,
                 trials: int = 200, seed: int = 0, progress: Optional[Any] = None) -> CampaignResult:
    """Run a named scenario. ``site`` and ``overrides`` (assumption name -> value) replace its own. A sizing
    scenario (``size`` entry) runs the campaign of its answer."""
    sc = get_scenario(name)
    if "size" in sc:
        if overrides or embodied or cost_basis != "owned":
            raise UserError(f"scenario {name} is a sizing question: overrides, --embodied and --cloud do not apply")
        z = size_scenario(name, site=site, reliability=reliability, trials=trials, seed=seed)
        r = z.campaign
        r.scenario = name
        r.notes = [z.answer, f"binding limit: {z.binding_text}"] + z.notes + \
            [n for n in r.notes if n not in z.notes]
        r.published = comparisons(r, sc.get("published") or {})
        r.notes.extend(explain_misses(r, catalog.gpu(z.gpu).peak("bf16")))
        return r
    load_site(site or sc["site"])            # bad site or override: fail before the search
    apply_overrides({}, overrides or {}, "check")
    cluster = scenario_cluster(sc)
    extra: dict[str, Assumption] = {}
    for k, o in (sc.get("overrides") or {}).items():
        apply_overrides(extra, {k: o["value"]}, f"scenario {name}: {o['source']}")
    user = dict(overrides or {})
    notes: list[str] = []
    profile = sc.get("reliability_profile")
    plan = sc.get("plan") or {}
    m = sc["model"]
    model = _spec_from(sc)
    step = bound = None
    if model is not None:
        if "tokens" in sc:
            tokens = float(sc["tokens"])
            extra["tokens"] = Assumption(value=tokens, unit="tokens", source=str(sc.get("tokens_source", "")))
        else:
            tokens = float(sc["training_flops"]) / chinchilla.flops_per_token(model)
            extra["training_flops_budget"] = Assumption(value=float(sc["training_flops"]), unit="FLOP",
                                                        source=str(sc.get("training_flops_source", "")).strip())
        if not isinstance(m, str):
            extra["model_shape"] = Assumption(value=model.name, unit="shape", source=str(m["source"]).strip())
    else:
        co = m["compute_optimal"]
        tpp = float(co.get("tokens_per_param", chinchilla.TOKENS_PER_PARAM))
        mname = m.get("name", name)
        src = str(m["source"]).strip()
        if "training_flops" in co:
            model, tokens = chinchilla.optimal_for_compute(float(co["training_flops"]), tpp, mname)
            extra["training_flops_budget"] = Assumption(value=float(co["training_flops"]), unit="FLOP", source=src)
        else:
            # size to a wall-clock budget: the largest compute-optimal model the cluster trains in `days`,
            # failures counted (megacluster.sizing's deadline search)
            from ..sizing import largest_model_for_days

            days = float(co["days"])
            if tpp != chinchilla.TOKENS_PER_PARAM:
                raise UserError(f"scenario {name}: sizing to days takes Chinchilla's {chinchilla.TOKENS_PER_PARAM:g} "
                                f"tokens per parameter, got {tpp:g}")
            model, tokens, step = largest_model_for_days(
                cluster, days, site=site or sc["site"], stack=_stack(plan), pins=plan.get("pins"),
                seq_len=plan.get("seq_len"), global_batch=plan.get("global_batch"),
                global_batch_bounds=plan.get("global_batch_bounds"), overrides=user, reliability=reliability,
                trials=trials, seed=seed, reliability_profile=profile, model_name=mname)
            _, bound = plan_batch(plan, model, tokens)
            budget = chinchilla.flops_per_token(model) * tokens
            extra["training_flops_budget"] = Assumption(value=budget, unit="FLOP", source=src)
            notes.append(f"sized by Chinchilla (Hoffmann et al. 2022, {tpp:g} tokens/parameter): the largest model "
                         f"whose campaign on this cluster, failures counted, ends within {days:g} days")
        extra["model_shape"] = Assumption(value=f"{model.name}: {model.n_layers} layers, d_model {model.d_model}, "
                                                f"{model.params_total / 1e9:,.0f}B params", unit="shape",
                                          source=src + "; " + chinchilla.LLAMA3_SHAPE_SOURCE)
    if step is None:
        bounds, bound = plan_batch(plan, model, tokens)
        step, plan_src = resolve_step(model, cluster, stack=_stack(plan), global_batch=plan.get("global_batch"),
                                      seq_len=plan.get("seq_len"), pins=plan.get("pins"),
                                      global_batch_bounds=bounds)
    else:
        plan_src = "searched"
    if bound is not None:
        extra["global_batch_bound"] = batch_assumption(bound)
        notes.insert(0, batch_note(step, bound))
    if plan.get("source"):
        extra["plan"] = Assumption(value=str(plan.get("pins", "")), unit="layout pins",
                                   source=str(plan["source"]).strip())
    extra["cluster"] = Assumption(value=f"{cluster.n_gpus:,} x {cluster.gpu.id}, {cluster.fabric.id}",
                                  unit="cluster", source=str(sc.get("cluster_source", "")).strip())
    r = campaign_from_step(step, tokens=tokens, gpu=cluster.gpu, n_gpus=cluster.n_gpus,
                           gpus_per_node=cluster.node.gpus_per_node, site=site or sc["site"], overrides=user,
                           override_source="override (command line)", model=model, model_name=model.name,
                           embodied=embodied, cost_basis=cost_basis, reliability=reliability,
                           reliability_profile=profile, reliability_trials=trials, seed=seed,
                           plan_source=plan_src, extra_assumptions=extra, progress=progress)
    r.scenario = name
    r.notes = notes + r.notes
    r.published = comparisons(r, sc.get("published") or {})
    for key, what in (("mfu", "MFU"), ("mfu_effective", "MFU over the wall clock")):
        mb = r.published.get(key)
        if mb and not r.mfu_pinned and not mb["within"]:
            r.notes.append(f"the step model's {what} {mb['modelled']:.1%} is outside the published "
                           f"{mb['low']:.0%}-{mb['high']:.0%} (reported, not forced; --mfu pins it)")
    r.notes.extend(explain_misses(r, cluster.gpu.peak("bf16")))
    return r


# what each published figure is computed from (the assumptions that drive it)
_DRIVERS = {
    "peak_facility_mw": ("gpu_tdp_w", "gpu_power_fraction_compute", "server_overhead_w_per_gpu",
                         "network_storage_power_fraction", "pue"),
    "water_onsite_gallons_per_day": ("wue_l_per_kwh", "gpu_power_fraction_compute", "gpu_tdp_w"),
    "gpu_capex_usd": ("gpu_price_usd",),
    "co2e_tdp_method_at_published_gpu_hours_tonnes": ("gpu_tdp_w", "pue", "grid_gco2_per_kwh"),
}


def explain_misses(r: CampaignResult, peak_bf16_flops: float) -> list[str]:
    """One line per published figure outside its band, saying which assumption drives the gap (computed)."""
    out: list[str] = []
    for key, c in r.published.items():
        if c["within"]:
            continue
        got, lo, hi = float(c["modelled"]), float(c["low"]), float(c["high"])
        side = "above" if got > hi else "below"
        head = f"miss: {key} {got:,.4g} is {side} the published {lo:,.4g}-{hi:,.4g}"
        if key == "days":
            mid = (lo + hi) / 2
            need = r.training_flops / (r.n_gpus * peak_bf16_flops * mid * 86400.0)
            f_mfu, f_good = need / r.mfu, 1.0 / r.goodput
            drive = "MFU (the assumed shape, precision and batch)" if f_mfu >= f_good else \
                "failures (goodput at this scale)"
            out.append(f"{head}: {mid:g} days need MFU x goodput {need:.1%} of the BF16 peak for "
                       f"{r.training_flops:.3g} FLOP on {r.n_gpus:,} GPUs; the model gives {r.mfu:.1%} x "
                       f"{r.goodput:.1%} = {r.mfu_effective:.1%}. The {got / mid:.2f}x gap is {f_mfu:.2f}x MFU "
                       f"({r.mfu:.1%} against {need:.1%} needed without failures) and {f_good:.2f}x failures "
                       f"(goodput {r.goodput:.1%}); the larger is {drive}")
        elif key in ("training_flops",):
            out.append(f"{head}: the model's FLOPs per token ({r.model_flops_per_token:.3g}) x "
                       f"{r.tokens:.3g} tokens; the shape and token count are the scenario's")
        elif key in ("mfu", "mfu_effective"):
            shape = r.assumptions.get("model_shape")
            what = f"the shape of {r.model}" + (" (an assumption: see model_shape)" if shape else " (catalog)")
            lay = r.layout
            out.append(f"{head}: the step model's prediction for {lay.get('precision', '')} layout TP{lay.get('tp')} "
                       f"PP{lay.get('pp')} DP{lay.get('dp')} EP{lay.get('ep', 1)} with a global batch of "
                       f"{lay.get('global_batch', 0):,}; it rests on {what} and the plan's precision and batch, and "
                       f"the step model's error on published runs reaches 25% (README, Validation)")
        else:
            drivers = [f"{k} {r.assumptions[k].value:g}" for k in _DRIVERS.get(key, ()) if k in r.assumptions
                       and not isinstance(r.assumptions[k].value, str)]
            out.append(f"{head}: computed from " + (", ".join(drivers) if drivers else "the campaign's figures") +
                       " (each with its source in the assumptions table)")
    return out


def title(name: str) -> str:
    return str(get_scenario(name).get("title", name))
