"""Assumptions of a campaign: every figure not computed by the model, with its unit and its source.

Defaults come from ``catalog/data/costs.yaml``, the GPU catalog and the site; any can be overridden by name
(the CLI's flags, a scenario file, or the ``overrides`` argument of :func:`run_campaign`).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

from pydantic import BaseModel

from .. import catalog
from ..errors import UserError, short
from ..specs import GPUSpec


class Assumption(BaseModel):
    """One input figure: value, unit and where it comes from."""

    value: Union[float, str]
    unit: str
    source: str


# name -> (unit, lower bound, upper bound or None)
BOUNDS: dict[str, tuple[str, float, Optional[float]]] = {
    "grid_gco2_per_kwh": ("gCO2e/kWh", 0, None),
    "electricity_usd_per_kwh": ("USD/kWh", 0, None),
    "pue": ("ratio", 1, None),
    "wue_l_per_kwh": ("L/kWh IT", 0, None),
    "grid_water_l_per_kwh": ("L/kWh", 0, None),
    "gpu_tdp_w": ("W", 1e-9, None),
    "gpu_price_usd": ("USD", 0, None),
    "server_overhead_w_per_gpu": ("W", 0, None),
    "network_storage_power_fraction": ("fraction of server power", 0, None),
    "gpu_power_fraction_compute": ("fraction of TDP", 0, 1.5),
    "gpu_power_fraction_communication": ("fraction of TDP", 0, 1.5),
    "gpu_power_fraction_optimizer": ("fraction of TDP", 0, 1.5),
    "gpu_power_fraction_bubble": ("fraction of TDP", 0, 1.5),
    "gpu_power_fraction_idle": ("fraction of TDP", 0, 1.5),
    "server_cost_ratio": ("fraction of GPU cost", 0, None),
    "network_capex_share": ("fraction of hardware cost", 0, 0.99),
    "facility_usd_per_mw": ("USD/MW IT", 0, None),
    "hardware_life_years": ("years", 1e-9, None),
    "facility_life_years": ("years", 1e-9, None),
    "cloud_usd_per_gpu_hour": ("USD/GPU-hour", 0, None),
    "embodied_gpu_kgco2e": ("kgCO2e/GPU", 0, None),
    "embodied_server_kgco2e": ("kgCO2e/server", 0, None),
    "embodied_life_years": ("years", 1e-9, None),
    "embodied_use_fraction": ("fraction", 1e-9, 1),
    "mfu": ("fraction of peak", 1e-3, 1),              # below 0.1% MFU no one trains
    "goodput": ("fraction of wall clock", 1e-2, 1),    # below 1% goodput a job never finishes
}
PHASE_KEYS = ("compute", "communication", "optimizer", "bubble", "idle")


def _by_generation(entry: dict, gpu: GPUSpec, default_key: str = "default") -> float:
    return float(entry.get(gpu.generation, entry.get(default_key)))


def defaults(gpu: GPUSpec, site: Mapping[str, Assumption], site_name: str) -> dict[str, Assumption]:
    """The default assumptions for a campaign on ``gpu`` at ``site``."""
    c = catalog.load("costs")
    a: dict[str, Assumption] = {}
    for k, v in site.items():
        a[k] = Assumption(value=v.value, unit=v.unit, source=f"site {site_name}: {v.source}")
    gsrc = f"GPU catalog {gpu.id}: {gpu.source.strip()}"
    a["gpu_tdp_w"] = Assumption(value=gpu.power_cap_w or gpu.tdp_w, unit="W", source=gsrc)
    a["gpu_price_usd"] = Assumption(value=gpu.price_usd, unit="USD", source=gsrc)
    so = c["server_overhead_w_per_gpu"]
    if gpu.generation in so:
        so_w = float(so[gpu.generation])
    else:
        so_w = float(so["default_fraction_of_tdp"]) * gpu.tdp_w
    a["server_overhead_w_per_gpu"] = Assumption(value=so_w, unit="W", source=so["source"].strip())
    ns = c["network_storage_power_fraction"]
    a["network_storage_power_fraction"] = Assumption(value=ns["value"], unit="fraction of server power",
                                                     source=ns["source"].strip())
    ph = c["gpu_power_fraction_by_phase"]
    for p in PHASE_KEYS:
        a[f"gpu_power_fraction_{p}"] = Assumption(value=float(ph[p]), unit="fraction of TDP",
                                                  source=ph["source"].strip())
    sc = c["server_cost_ratio"]
    a["server_cost_ratio"] = Assumption(value=_by_generation(sc, gpu), unit="fraction of GPU cost",
                                        source=sc["source"].strip())
    for k in ("network_capex_share", "facility_usd_per_mw", "hardware_life_years", "facility_life_years"):
        a[k] = Assumption(value=float(c[k]["value"]), unit=BOUNDS[k][0], source=c[k]["source"].strip())
    cl = c["cloud_usd_per_gpu_hour"]
    if gpu.id in cl:
        a["cloud_usd_per_gpu_hour"] = Assumption(value=float(cl[gpu.id]), unit="USD/GPU-hour",
                                                 source=cl["source"].strip())
    em = c["embodied"]
    for k, unit in (("gpu_kgco2e", "kgCO2e/GPU"), ("server_kgco2e", "kgCO2e/server"),
                    ("life_years", "years"), ("use_fraction", "fraction")):
        a[f"embodied_{k}"] = Assumption(value=float(em[k]), unit=unit, source=em["source"].strip())
    return a


def apply_overrides(a: dict[str, Assumption], overrides: Mapping[str, float], source: str) -> None:
    """Replace assumptions by name (in place), checking names and ranges."""
    for k, v in overrides.items():
        if k not in BOUNDS:
            raise UserError(f"unknown assumption {short(k)}; known: {', '.join(sorted(BOUNDS))}")
        unit, lo, hi = BOUNDS[k]
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise UserError(f"assumption {k} must be a number, got {short(v)}") from None
        if not math.isfinite(v):
            raise UserError(f"assumption {k} must be a finite number, got {v}")
        if v < lo or (hi is not None and v > hi):
            rng = f">= {lo:g}" + (f" and <= {hi:g}" if hi is not None else "")
            raise UserError(f"assumption {k} = {v:g} is out of range (must be {rng})")
        a[k] = Assumption(value=v, unit=unit, source=source)


def value(a: Mapping[str, Assumption], key: str) -> float:
    return float(a[key].value)
