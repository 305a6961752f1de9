"""Facility, energy, water, carbon and cost physics of a campaign, on hand-computed cases."""

from types import SimpleNamespace

import pytest

from megacluster import catalog
from megacluster.campaign import campaign_from_step
from megacluster.campaign import carbon, cost, energy, facility
from megacluster.campaign.sites import load_site
from megacluster.errors import UserError

FR = {"compute": 1.0, "communication": 0.5, "optimizer": 0.5, "bubble": 0.15, "idle": 0.15}


def fake_step(step_time_s=1.0, tokens_per_step=1e6, mfu=0.4, flops_per_token=6e9, phases=None):
    return SimpleNamespace(step_time_s=step_time_s, tokens_per_step=tokens_per_step, mfu=mfu,
                           model_flops_per_token=flops_per_token, layout={},
                           phases_s=phases or {"compute": 0.8, "communication": 0.1, "bubble": 0.1,
                                               "optimizer": 0.0})


def test_mean_gpu_power_follows_phases():
    p = facility.mean_gpu_power_w(700, {"compute": 0.8, "communication": 0.1, "bubble": 0.1}, FR)
    assert p == pytest.approx(700 * 0.8 + 350 * 0.1 + 105 * 0.1)  # 605.5 W


def test_energy_is_power_integrated_over_phases_hand_computed():
    # 1000 H100 for 10 failure-free days, step of 1 s: 0.8 s compute, 0.1 s communication, 0.1 s bubble
    # GPU mean 605.5 W; + 575 W server overhead = 1180.5 W; x 1.10 network/storage = 1298.55 W per GPU
    # -> 1.29855 MW IT; x 240 h = 311.652 MWh IT; x PUE 1.2 = 373.9824 MWh facility
    r = campaign_from_step(fake_step(), tokens=1e6 * 864000, gpu=catalog.gpu("h100-sxm"), n_gpus=1000,
                           gpus_per_node=8, site="us-average", overrides={"pue": 1.2, "goodput": 1.0})
    assert r.days == pytest.approx(10.0)
    assert r.gpu_hours == pytest.approx(240_000)
    assert r.mean_gpu_power_w == pytest.approx(605.5)
    assert r.avg_it_mw == pytest.approx(1.29855)
    assert r.peak_it_mw == pytest.approx(1000 * (700 + 575) * 1.1 / 1e6)
    assert r.energy_it_mwh == pytest.approx(311.652)
    assert r.energy_mwh == pytest.approx(373.9824)
    assert r.peak_facility_mw == pytest.approx(r.peak_it_mw * 1.2)
    # water: WUE 1.8 L/kWh IT, grid 7.6 L/kWh facility
    assert r.water_onsite_liters == pytest.approx(311_652 * 1.8)
    assert r.water_offsite_liters == pytest.approx(373_982.4 * 7.6)
    assert r.water_onsite_gallons_per_day == pytest.approx(311_652 * 1.8 / 3.785411784 / 10)
    # carbon: 367 g/kWh location-based
    assert r.co2e_tonnes == pytest.approx(373.9824 * 0.367)
    # electricity at $0.0806/kWh
    assert r.electricity_usd == pytest.approx(373_982.4 * 0.0806)
    assert r.training_flops == pytest.approx(6e9 * 8.64e11)


def test_energy_helpers():
    assert energy.it_energy_mwh(2.0, 10.0, 1.0, 5.0) == pytest.approx(25.0)
    assert energy.facility_energy_mwh(25.0, 1.2) == pytest.approx(30.0)
    pp = energy.power_profile(8, 700, {"compute": 1.0}, FR, 575, 0.1)
    assert pp.it_training_mw == pytest.approx(pp.peak_it_mw)
    assert pp.it_idle_mw < pp.it_training_mw


def test_llama31_405b_emissions_by_model_card_method():
    # Llama 3.1 405B model card: 30.84M H100-hours at 700 W TDP -> 8,930 tCO2eq location-based.
    # US-average grid 367 g/kWh (EIA 2023), Meta PUE 1.08.
    t = carbon.tdp_method_co2e_tonnes(30.84e6, 700, 1.08, 367)
    assert t == pytest.approx(8930, rel=0.15)


def test_embodied_matches_bloom():
    # Luccioni et al.: 384 A100 in 48 servers for about 2,820 h -> 11.2 tCO2e embodied
    t = carbon.embodied_co2e_tonnes(384, 8, 1_082_990 / 384, 150, 2500, 6, 0.85)
    assert t == pytest.approx(11.2, rel=0.03)


def test_capex_split():
    c = cost.capex(1000, 30_000, 0.64, 0.19, 10.0, 11.7e6)
    assert c.gpu_capex_usd == 30e6
    assert c.server_capex_usd == pytest.approx(19.2e6)
    hw = c.gpu_capex_usd + c.server_capex_usd + c.network_capex_usd
    assert c.network_capex_usd / hw == pytest.approx(0.19)
    assert c.facility_capex_usd == pytest.approx(117e6)
    assert cost.amortised_usd(8760e3, 8760, 5) == pytest.approx(8760e3 / 5)


def test_mfu_pin_stretches_the_step():
    r = campaign_from_step(fake_step(mfu=0.5), tokens=8.64e11, gpu=catalog.gpu("h100-sxm"), n_gpus=1000,
                           gpus_per_node=8, overrides={"mfu": 0.25, "goodput": 1.0})
    assert r.mfu == 0.25 and r.mfu_step_model == 0.5 and r.mfu_pinned
    assert r.days == pytest.approx(20.0)
    assert r.mean_gpu_power_w == pytest.approx(605.5)


def test_cloud_cost_basis():
    r = campaign_from_step(fake_step(), tokens=8.64e11, gpu=catalog.gpu("h100-sxm"), n_gpus=1000,
                           gpus_per_node=8, overrides={"goodput": 1.0}, cost_basis="cloud")
    assert r.cost_usd == pytest.approx(240_000 * 3.29)
    with pytest.raises(UserError, match="no cloud price"):
        campaign_from_step(fake_step(), tokens=8.64e11, gpu=catalog.gpu("a100-40gb"), n_gpus=1000,
                           gpus_per_node=8, overrides={"goodput": 1.0}, cost_basis="cloud")


def test_every_output_field_carries_its_unit():
    r = campaign_from_step(fake_step(), tokens=8.64e11, gpu=catalog.gpu("h100-sxm"), n_gpus=1000,
                           gpus_per_node=8, overrides={"goodput": 1.0})
    unitless = {"model", "gpu", "n_gpus", "site", "tokens", "plan_source", "layout", "goodput", "interruptions",
                "mfu", "mfu_step_model", "mfu_pinned", "mfu_effective", "cost_basis", "assumptions", "notes", "scenario",
                "published", "params_total",
                "intervals", "interval_basis"}     # keyed by the figures they bound, which carry the units
    units = ("days", "_hours", "_s", "_flops", "_per_token", "_w", "_mw", "_mwh", "_liters", "_per_day",
             "_tonnes", "_usd")
    for name in type(r).model_fields:
        if name in unitless:
            continue
        assert name.endswith(units) or name.startswith("days"), name
    for name, a in r.assumptions.items():
        assert a.unit and a.source, name


@pytest.mark.parametrize("over,msg", [({"pue": 0.9}, "out of range"), ({"nonsense": 1}, "unknown assumption"),
                                      ({"mfu": 1.5}, "out of range"), ({"pue": "x"}, "must be a number")])
def test_bad_overrides(over, msg):
    with pytest.raises(UserError, match=msg):
        campaign_from_step(fake_step(), tokens=1e12, gpu=catalog.gpu("h100-sxm"), n_gpus=8, gpus_per_node=8,
                           overrides=over)


def test_bad_tokens_and_site(tmp_path):
    with pytest.raises(UserError, match="tokens must be positive"):
        campaign_from_step(fake_step(), tokens=0, gpu=catalog.gpu("h100-sxm"), n_gpus=8, gpus_per_node=8)
    with pytest.raises(UserError, match="unknown site"):
        load_site("memphis")
    bad = tmp_path / "site.yaml"
    bad.write_text("pue: 1.3\n")
    with pytest.raises(UserError, match="missing"):
        load_site(str(bad))
    bad.write_text("pue: {value: 0.5}\ngrid_gco2_per_kwh: 1\nelectricity_usd_per_kwh: 1\nwue_l_per_kwh: 1\n"
                   "grid_water_l_per_kwh: 1\n")
    with pytest.raises(UserError, match="impossible"):
        load_site(str(bad))


def test_site_file_and_catalog_sites(tmp_path):
    for s in ("memphis-tn", "us-average", "hyperscale-liquid-cooled"):
        sid, figs = load_site(s)
        assert all(f.source for f in figs.values())
    f = tmp_path / "mysite.yaml"
    f.write_text("id: nordic\ngrid_gco2_per_kwh: {value: 30, source: my utility}\nelectricity_usd_per_kwh: 0.05\n"
                 "pue: 1.1\nwue_l_per_kwh: 0.1\ngrid_water_l_per_kwh: 2\n")
    sid, figs = load_site(str(f))
    assert sid == "nordic" and figs["grid_gco2_per_kwh"].value == 30
    assert figs["pue"].source == str(f)


def test_usable_gpu_counts_keep_at_most_five_percent_spare():
    from megacluster.campaign.campaign import usable_gpu_counts
    counts = usable_gpu_counts(100_000, 8)
    assert counts[0] == 100_000 and 98_304 in counts
    assert all(c % 8 == 0 and 0.95 * 100_000 <= c <= 100_000 for c in counts)
    assert usable_gpu_counts(16_384, 8) == [16_384]


def test_search_may_leave_hot_spares_when_that_trains_faster():
    """25,000 A100 (2^3 x 5^5) admit few layouts; the campaign may train on fewer and keep the rest spare."""
    from megacluster.campaign.campaign import resolve_step
    from megacluster.cluster import make_cluster
    from megacluster import catalog
    model = catalog.model("llama3-70b")
    cluster = make_cluster("a100-80gb", 25_000)
    from megacluster.search import search
    step, source = resolve_step(model, cluster, global_batch=None, seq_len=4096)
    everything = search(model, cluster, seq_len=4096, top=1).best
    assert step.tokens_per_s >= everything.tokens_per_s
    assert (step.n_gpus < 25_000) == ("hot spares" in source)
    assert step.n_gpus >= 0.95 * 25_000
