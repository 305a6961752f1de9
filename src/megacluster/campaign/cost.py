"""Cost: capital expenditure (GPUs, rest of the servers, network, facility), amortised over service lives,
plus electricity; or cloud rental per GPU-hour. Plain numbers, dollars."""

from __future__ import annotations

from pydantic import BaseModel

HOURS_PER_YEAR = 8760.0


class Capex(BaseModel):
    gpu_capex_usd: float
    server_capex_usd: float
    network_capex_usd: float
    facility_capex_usd: float
    capex_usd: float


def capex(n_gpus: int, gpu_price_usd: float, server_cost_ratio: float, network_capex_share: float,
          peak_it_mw: float, facility_usd_per_mw: float) -> Capex:
    """Capital cost of the cluster and its facility, USD.

    servers (non-GPU part) = GPUs x server_cost_ratio; the network is ``network_capex_share`` of all cluster
    hardware, so network = share / (1 - share) x (GPUs + servers); facility = $/MW x peak IT MW.
    """
    gpus = n_gpus * gpu_price_usd
    servers = gpus * server_cost_ratio
    network = network_capex_share / (1.0 - network_capex_share) * (gpus + servers)
    fac = peak_it_mw * facility_usd_per_mw
    return Capex(gpu_capex_usd=gpus, server_capex_usd=servers, network_capex_usd=network,
                 facility_capex_usd=fac, capex_usd=gpus + servers + network + fac)


def amortised_usd(capex_usd: float, campaign_hours: float, life_years: float) -> float:
    """Straight-line share of ``capex_usd`` used by a campaign of ``campaign_hours``."""
    return capex_usd * campaign_hours / (life_years * HOURS_PER_YEAR)


def electricity_usd(facility_energy_mwh: float, usd_per_kwh: float) -> float:
    """Electricity bill, USD."""
    return facility_energy_mwh * 1000.0 * usd_per_kwh


def cloud_usd(gpu_hours: float, usd_per_gpu_hour: float) -> float:
    """Cloud rental, USD (electricity and facility included in the rate)."""
    return gpu_hours * usd_per_gpu_hour
