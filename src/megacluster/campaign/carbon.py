"""Carbon: location-based operational emissions and (optional) embodied emissions of the hardware."""

from __future__ import annotations


def operational_co2e_tonnes(facility_energy_mwh: float, grid_gco2_per_kwh: float) -> float:
    """Location-based emissions, tonnes CO2e: facility energy times the grid's average intensity.

    MWh x g/kWh = kg (1 MWh = 1000 kWh, 1000 g = 1 kg), so tonnes = MWh x g/kWh / 1000.
    """
    return facility_energy_mwh * grid_gco2_per_kwh / 1000.0


def tdp_method_co2e_tonnes(gpu_hours: float, tdp_w: float, pue: float, grid_gco2_per_kwh: float) -> float:
    """Emissions by the Llama model cards' method, tonnes CO2e: GPU-hours x TDP x PUE x grid intensity.

    (Meta: "power consumption is the peak power capacity per GPU device used, adjusted for power usage
    efficiency".) Server, network and storage power are not counted by this method.
    """
    kwh = gpu_hours * tdp_w / 1000.0 * pue
    return kwh * grid_gco2_per_kwh / 1e6


def embodied_co2e_tonnes(n_gpus: int, gpus_per_server: int, campaign_hours: float, gpu_kgco2e: float,
                         server_kgco2e: float, life_years: float, use_fraction: float) -> float:
    """Embodied (manufacturing) emissions charged to the campaign, tonnes CO2e.

    The hardware's embodied carbon is spread over its life at its use fraction (Luccioni et al. 2023):
    share = campaign_hours / (life_years x 8760 h x use_fraction).
    """
    n_servers = -(-n_gpus // gpus_per_server)
    total_kg = n_gpus * gpu_kgco2e + n_servers * server_kgco2e
    share = campaign_hours / (life_years * 8760.0 * use_fraction)
    return total_kg * share / 1000.0
