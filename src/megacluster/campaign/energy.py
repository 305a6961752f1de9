"""Energy of a campaign: power integrated over the campaign's phases (training steps and downtime)."""

from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel

from . import facility


class PowerProfile(BaseModel):
    """Per-GPU and cluster power of a campaign, W and MW (units in names)."""

    mean_gpu_power_training_w: float
    gpu_power_idle_w: float
    peak_gpu_power_w: float
    it_training_mw: float
    it_idle_mw: float
    peak_it_mw: float


def power_profile(n_gpus: int, tdp_w: float, phases_s: Mapping[str, float],
                  fraction_by_phase: Mapping[str, float], server_overhead_w_per_gpu: float,
                  network_storage_fraction: float) -> PowerProfile:
    """Cluster IT power while training (mean over a step), while idle (failure downtime), and at peak."""
    g_train = facility.mean_gpu_power_w(tdp_w, phases_s, fraction_by_phase)
    g_idle = tdp_w * fraction_by_phase.get("idle", fraction_by_phase.get("bubble", 0.0))
    g_peak = facility.peak_gpu_power_w(tdp_w, fraction_by_phase)

    def it_mw(g: float) -> float:
        return facility.it_power_w(n_gpus, g, server_overhead_w_per_gpu, network_storage_fraction) / 1e6

    return PowerProfile(mean_gpu_power_training_w=g_train, gpu_power_idle_w=g_idle, peak_gpu_power_w=g_peak,
                        it_training_mw=it_mw(g_train), it_idle_mw=it_mw(g_idle), peak_it_mw=it_mw(g_peak))


def it_mw_by_phase(n_gpus: int, tdp_w: float, fraction_by_phase: Mapping[str, float],
                   server_overhead_w_per_gpu: float, network_storage_fraction: float) -> dict[str, float]:
    """Cluster IT power, MW, while every GPU runs each phase (its share of TDP), servers and network included."""
    return {p: facility.it_power_w(n_gpus, tdp_w * f, server_overhead_w_per_gpu, network_storage_fraction) / 1e6
            for p, f in fraction_by_phase.items()}


def it_energy_mwh(it_training_mw: float, training_hours: float, it_idle_mw: float = 0.0,
                  idle_hours: float = 0.0) -> float:
    """IT energy, MWh: training power over the training hours plus idle power over downtime hours."""
    return it_training_mw * training_hours + it_idle_mw * idle_hours


def facility_energy_mwh(it_mwh: float, pue: float) -> float:
    """Facility energy, MWh: IT energy times PUE."""
    return it_mwh * pue
