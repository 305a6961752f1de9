"""``megacluster campaign``: a whole training run, a named scenario, or two side by side."""

from __future__ import annotations

import re
from typing import Any, List, Optional, Tuple

import typer

from ..calibrate.options import HARDWARE
from ..calibrate.profile import use_hardware
from ..errors import UserError, short
from ..jsonout import print_json
from ..limits import check_number
from ..report.tables import wide_console

_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}


def parse_count(text: str, what: str = "tokens") -> float:
    """'15.6T', '300B', '1.5e13' -> float."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMbBgGtTpP]?)\s*", text or "")
    if not m:
        raise UserError(f"--{what}: cannot read {short(text)}; write e.g. 15.6T, 300B or 1.5e13")
    v = float(m.group(1)) * (_SUFFIX[m.group(2).lower()] if m.group(2) else 1.0)
    if v <= 0:
        raise UserError(f"--{what} must be positive, got {short(text)}")
    check_number(f"--{what}", v, what)
    return v


def _sets(items: List[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for it in items:
        if "=" not in it:
            raise UserError(f"--set expects NAME=VALUE, got {short(it)}")
        k, v = it.split("=", 1)
        try:
            out[k.strip().replace("-", "_")] = float(v)
        except ValueError:
            raise UserError(f"--set {k}: {short(v)} is not a number") from None
    return out


def _from_plan(path: str) -> dict[str, Any]:
    from ..plan_file import load_plan

    p = load_plan(path)
    get = (lambda k: p.get(k)) if isinstance(p, dict) else (lambda k: getattr(p, k, None))
    return {k: get(k) for k in ("model", "cluster", "gpu", "gpus", "fabric", "layout", "stack")}


def campaign(
    scenario: Optional[str] = typer.Option(None, "--scenario", "-s", help="named scenario (xai-colossus-100k, ...)"),
    compare: Optional[Tuple[str, str]] = typer.Option(None, "--compare", help="two scenarios side by side"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="catalog model id or config.json path"),
    tokens: Optional[str] = typer.Option(None, "--tokens", "-t", help="training tokens, e.g. 15.6T"),
    gpu: Optional[str] = typer.Option(None, "--gpu", "-g", help="catalog GPU id, e.g. h100-sxm"),
    gpus: Optional[int] = typer.Option(None, "--gpus", "-n", help="number of GPUs"),
    fabric: Optional[str] = typer.Option(None, "--fabric", help="scale-out fabric id"),
    nic_gbps: Optional[float] = typer.Option(None, "--nic-gbps", help="NIC line rate, Gb/s"),
    gpus_per_node: Optional[int] = typer.Option(None, "--gpus-per-node", help="GPUs per server (default: the "
                                                "GPU's usual node, 8 for HGX)"),
    site: Optional[str] = typer.Option(None, "--site", help="site id (memphis-tn, us-average, "
                                       "hyperscale-liquid-cooled) or a site YAML file"),
    plan: Optional[str] = typer.Option(None, "--plan", help="plan file (else the plan is searched)"),
    global_batch: Optional[int] = typer.Option(None, "--global-batch", help="sequences per step, for the search"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="sequence length, for the search"),
    pue: Optional[float] = typer.Option(None, "--pue", help="override the site's PUE"),
    grid_gco2_per_kwh: Optional[float] = typer.Option(None, "--grid-gco2-per-kwh",
                                                      help="override the site's grid carbon intensity, gCO2e/kWh"),
    electricity_usd_per_kwh: Optional[float] = typer.Option(None, "--electricity-usd-per-kwh",
                                                            help="override the site's electricity price, USD/kWh"),
    wue_l_per_kwh: Optional[float] = typer.Option(None, "--wue-l-per-kwh",
                                                  help="override the site's on-site water, litres per IT kWh"),
    grid_water_l_per_kwh: Optional[float] = typer.Option(None, "--grid-water-l-per-kwh",
                                                         help="override the grid's water, litres per kWh generated"),
    gpu_price_usd: Optional[float] = typer.Option(None, "--gpu-price-usd", help="override the GPU's unit price, USD"),
    cloud_usd_per_gpu_hour: Optional[float] = typer.Option(None, "--cloud-usd-per-gpu-hour",
                                                           help="cloud rental price, USD per GPU-hour (with --cloud)"),
    mfu: Optional[float] = typer.Option(None, "--mfu", help="pin the MFU (fraction) instead of the step model's"),
    goodput: Optional[float] = typer.Option(None, "--goodput", help="fix the goodput instead of simulating failures"),
    set_: List[str] = typer.Option([], "--set", help="override any assumption: NAME=VALUE (repeatable)"),
    embodied: bool = typer.Option(False, "--embodied", help="add embodied carbon of GPUs and servers"),
    cloud: bool = typer.Option(False, "--cloud", help="cost as cloud rental per GPU-hour instead of owning"),
    no_failures: bool = typer.Option(False, "--no-failures", help="leave failures out (goodput 1)"),
    trials: int = typer.Option(200, "--trials", help="Monte Carlo trials of the reliability model"),
    seed: int = typer.Option(0, "--seed", help="random seed of the reliability Monte Carlo"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    html: Optional[str] = typer.Option(None, "--html", help="also write an interactive HTML report (one file, "
                                       "no network needed)"),
    png: Optional[str] = typer.Option(None, "--png", help="also write the main figure as a PNG (needs kaleido and "
                                      "Chromium)"),
    hardware: Optional[str] = HARDWARE,
) -> None:
    """A whole training campaign: days, GPU-hours, megawatts, energy, water, carbon and cost, every
    assumption with its source."""
    from ..report.html import write_report
    from ..report.progress import ProgressBar
    from . import report
    from .campaign import run_campaign
    from .scenarios import run_scenario, scenario_names, title

    overrides = {k: v for k, v in dict(
        pue=pue, grid_gco2_per_kwh=grid_gco2_per_kwh, electricity_usd_per_kwh=electricity_usd_per_kwh,
        wue_l_per_kwh=wue_l_per_kwh, grid_water_l_per_kwh=grid_water_l_per_kwh, gpu_price_usd=gpu_price_usd,
        cloud_usd_per_gpu_hour=cloud_usd_per_gpu_hour, mfu=mfu, goodput=goodput).items() if v is not None}
    overrides.update(_sets(set_))
    for flag, v in (("--global-batch", global_batch), ("--seq-len", seq_len), ("--gpus-per-node", gpus_per_node)):
        check_number(flag, v, integer=True)
    bar = ProgressBar("simulating failures", "trials", enabled=False if as_json else None)
    common = dict(overrides=overrides, embodied=embodied, cost_basis="cloud" if cloud else "owned",
                  reliability=not no_failures, trials=trials, seed=seed, progress=bar)
    console = wide_console() if not as_json else None
    explicit = any(x is not None for x in (model, tokens, gpu, gpus, plan))
    hardware_gpu = use_hardware(hardware, gpu)
    gpu = hardware_gpu if explicit else gpu

    if compare:
        if scenario or explicit:
            raise UserError("--compare takes two scenario names and no --scenario/--model/--plan")
        a, b = (run_scenario(n, site=site, **common) for n in compare)
        bar.close()
        write_report("campaign-compare", html, png, a, b, compare[0], compare[1])
        if as_json:
            print_json({compare[0]: report.as_json(a), compare[1]: report.as_json(b)})
        else:
            report.print_compare(a, b, console, compare[0], compare[1])
        return
    if scenario:
        if explicit:
            raise UserError("--scenario fixes the model, tokens and cluster; drop --model/--tokens/--gpu/--gpus/--plan")
        r = run_scenario(scenario, site=site, **common)
        bar.close()
        write_report("campaign", html, png, r, title(scenario))
        if as_json:
            print_json(report.as_json(r))
        else:
            report.print_campaign(r, console, title(scenario))
        return
    if not explicit:
        raise UserError("give --scenario NAME (one of " + ", ".join(scenario_names()) +
                        "), --compare A B, or --model, --tokens, --gpu and --gpus")

    from ..cluster import make_cluster

    layout = stack = None
    p: dict[str, Any] = _from_plan(plan) if plan else {}
    model = model or p.get("model")
    if model is not None and not isinstance(model, str) and hasattr(model, "name") and not hasattr(model, "n_layers"):
        model = model.name
    cluster = p.get("cluster")
    if cluster is None or gpu is not None or gpus is not None:
        g = gpu if gpu is not None else p.get("gpu")
        n = gpus if gpus is not None else p.get("gpus")
        missing = [f for f, v in (("--model", model), ("--gpu", g), ("--gpus", n)) if v is None]
        if missing:
            raise UserError(f"missing {', '.join(missing)} (or give --scenario NAME)")
        cluster = make_cluster(g, int(n), fabric=fabric or p.get("fabric"), nic_gbps=nic_gbps,
                               gpus_per_node=gpus_per_node)
    if tokens is None:
        raise UserError("missing --tokens (training tokens, e.g. 15.6T)")
    layout, stack = p.get("layout"), p.get("stack")
    if plan and layout is not None and cluster.n_gpus != getattr(layout, "n_gpus", cluster.n_gpus):
        raise UserError(f"the plan's layout uses {layout.n_gpus} GPUs but the cluster has {cluster.n_gpus}")
    r = run_campaign(model, parse_count(tokens), cluster, site=site or "us-average", layout=layout, stack=stack,
                     global_batch=global_batch, seq_len=seq_len,
                     **{k: v for k, v in common.items() if k != "trials"},
                     reliability_trials=trials, **({"plan_source": "plan file"} if plan else {}))
    bar.close()
    write_report("campaign", html, png, r)
    if as_json:
        print_json(report.as_json(r))
    else:
        report.print_campaign(r, console)


def register(app: typer.Typer) -> None:
    app.command("campaign")(campaign)
