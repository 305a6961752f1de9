"""Facility power and water: GPU power that follows the step's phases, server overhead, network and storage,
PUE, on-site and off-site water. Plain functions over plain numbers; units in the names.

Power model, per GPU:
    gpu_w(phase)   = tdp_w * fraction[phase]           (compute ~1.0, communication, optimizer, bubble/idle)
    server_w       = gpu_w + server_overhead_w          (CPUs, memory, NICs, fans, PSU losses; constant)
    it_w           = server_w * (1 + network_storage_fraction)
    facility_w     = it_w * pue
"""

from __future__ import annotations

from typing import Mapping

from ..errors import UserError

GALLON_L = 3.785411784  # litres per US gallon
PHASES = ("compute", "communication", "bubble", "optimizer")


def mean_gpu_power_w(tdp_w: float, phases_s: Mapping[str, float], fraction_by_phase: Mapping[str, float]) -> float:
    """Time-weighted mean GPU board power over one step, W.

    ``phases_s``: exposed seconds per phase in one step (they sum to the step time). A phase not in
    ``fraction_by_phase`` is counted at the compute fraction (GPU busy).
    """
    total = sum(phases_s.values())
    if total <= 0:
        raise UserError("the step's phase times sum to zero; cannot compute power")
    if any(t < 0 for t in phases_s.values()):
        raise UserError("a step phase time is negative")
    busy = fraction_by_phase.get("compute", 1.0)
    energy_j = sum(tdp_w * fraction_by_phase.get(p, busy) * t for p, t in phases_s.items())
    return energy_j / total


def peak_gpu_power_w(tdp_w: float, fraction_by_phase: Mapping[str, float]) -> float:
    """Highest GPU board power of any phase, W (the compute phase: TDP)."""
    return tdp_w * max(fraction_by_phase.values())


def it_power_w(n_gpus: int, gpu_w: float, server_overhead_w_per_gpu: float,
               network_storage_fraction: float) -> float:
    """IT power of the cluster, W: GPUs plus the rest of each server, plus network and storage."""
    return n_gpus * (gpu_w + server_overhead_w_per_gpu) * (1.0 + network_storage_fraction)


def facility_power_w(it_w: float, pue: float) -> float:
    """Facility (grid) power, W: IT power times PUE."""
    if pue < 1.0:
        raise UserError(f"PUE {pue} is below 1; PUE is facility power / IT power (>= 1)")
    return it_w * pue


def onsite_water_l(it_energy_kwh: float, wue_l_per_kwh: float) -> float:
    """On-site (cooling) water consumed, litres: WUE (L per kWh of IT energy) times IT energy."""
    return it_energy_kwh * wue_l_per_kwh


def offsite_water_l(facility_energy_kwh: float, grid_water_l_per_kwh: float) -> float:
    """Off-site water consumed by power generation, litres: grid water intensity times facility energy."""
    return facility_energy_kwh * grid_water_l_per_kwh


def liters_to_gallons(liters: float) -> float:
    """US gallons in ``liters``."""
    return liters / GALLON_L
