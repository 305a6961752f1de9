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
from .campaign import SECONDS_PER_DAY, CampaignResult, _reliability, campaign_from_step, resolve_step


def scenario_names() -> list[str]:
    return [s["id"] for s in catalog.load("scenarios")["scenarios"]]


def get_scenario(name: str) -> dict[str, Any]:
    entries = {s["id"]: s for s in catalog.load("scenarios")["scenarios"]}
    if name not in entries:
        raise unknown_name("scenario", name, entries)
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


def run_scenario(name: str, *, site: Optional[str] = None, overrides: Optional[Mapping[str, float]] = None,
                 embodied: bool = False, cost_basis: str = "owned", reliability: bool = True,
                 trials: int = 200, seed: int = 0, progress: Optional[Any] = None) -> CampaignResult:
    """Run a named scenario. ``site`` and ``overrides`` (assumption name -> value) replace its own."""
    sc = get_scenario(name)
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
    step = None
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
            # size to a wall-clock budget: C = GPUs x peak x MFU x days x goodput, iterated on the step MFU
            days = float(co["days"])
            peak = cluster.gpu.peak("bf16")
            goodput = float(user.get("goodput", 0.0)) or (0.9 if reliability else 1.0)
            mfu = float(user.get("mfu", 0.4))
            model = None
            for _ in range(5):
                if "goodput" not in user and reliability:  # goodput of days x goodput failure-free days
                    rel = _reliability(cluster.n_gpus, days * goodput, profile, model, trials, seed)
                    goodput = float(rel.goodput_mean) if rel is not None else 1.0
                budget = cluster.n_gpus * peak * mfu * days * SECONDS_PER_DAY * goodput
                model, _ = chinchilla.optimal_for_compute(budget, tpp, mname)
                tokens = tpp * model.params_total
                step, _src = resolve_step(model, cluster, stack=_stack(plan), global_batch=plan.get("global_batch"),
                                          seq_len=plan.get("seq_len"), pins=plan.get("pins"),
                                          global_batch_bounds=plan.get("global_batch_bounds"))
                done = "mfu" in user or abs(step.mfu - mfu) < 0.002
                if "mfu" not in user:
                    mfu = float(step.mfu)
                if done:
                    break
            extra["training_flops_budget"] = Assumption(value=budget, unit="FLOP", source=src)
            notes.append(f"sized by Chinchilla (Hoffmann et al. 2022, {tpp:g} tokens/parameter) for {days:g} days at "
                         f"the step model's MFU {mfu:.1%} and goodput {goodput:.1%}")
        extra["model_shape"] = Assumption(value=f"{model.name}: {model.n_layers} layers, d_model {model.d_model}, "
                                                f"{model.params_total / 1e9:,.0f}B params", unit="shape",
                                          source=src + "; " + chinchilla.LLAMA3_SHAPE_SOURCE)
    if step is None:
        step, plan_src = resolve_step(model, cluster, stack=_stack(plan), global_batch=plan.get("global_batch"),
                                      seq_len=plan.get("seq_len"), pins=plan.get("pins"),
                                      global_batch_bounds=plan.get("global_batch_bounds"))
    else:
        plan_src = "searched"
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
    return r


def title(name: str) -> str:
    return str(get_scenario(name).get("title", name))
