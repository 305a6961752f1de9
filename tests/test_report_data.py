"""What the reports draw comes from the commands' own computations: the searched-layout sample, the
reliability interval curve and example run, the campaign's power by phase, the progress helper, the
validation interval reader."""

from __future__ import annotations

import numpy as np
import pytest

from megacluster.report.progress import ProgressBar, progress_bar


def test_search_points_keep_an_even_sample_and_count_everything():
    from megacluster.report.html.plan_figs import SearchPoints

    pts = SearchPoints(limit=100)
    for k in range(10):                                     # 10 chunks of 37 layouts
        t = np.arange(37, dtype=float) + 100 * k
        pts(t, t * 1024 ** 3, t % 2 == 0)
    t, m, f = pts.arrays()
    assert pts.seen == 370 and pts.fit == 10 * 19
    assert 50 <= len(t) <= 100 and pts.stride == 4
    assert np.all(np.diff(t) > 0) and np.allclose(m, t)     # in order, memory in GiB
    assert np.array_equal(f, t % 2 == 0)


def test_search_observe_sees_every_searched_layout():
    from megacluster import catalog
    from megacluster.cluster import make_cluster
    from megacluster.report.html.plan_figs import SearchPoints
    from megacluster.search import search

    pts = SearchPoints()
    res = search(catalog.model("llama3.1-8b"), make_cluster("h100-sxm", 64), top=2, observe=pts)
    assert pts.seen == res.searched and pts.fit == res.feasible


def test_reliability_curve_peaks_at_the_best_interval_and_example_run_adds_up():
    from megacluster.reliability import simulate_reliability

    seen = []
    r = simulate_reliability(16384, 20, trials=40, seed=1, progress=lambda d, t: seen.append((d, t)))
    c = r.interval_curve
    i = int(np.argmax(c["goodput"]))
    assert c["minutes"][0] < r.best_interval_minutes < c["minutes"][-1]
    assert abs(np.log(c["minutes"][i] / r.best_interval_minutes)) < 0.2
    assert max(c["goodput"]) <= r.goodput_expected_at_best + 1e-9
    run = r.example_run
    work = sum(run["work_h"]) + run["last_work_h"]
    assert work == pytest.approx(20 * 24)                    # the run trains exactly the days asked
    assert run["end_h"] > work and len(run["cause"]) == len(run["start_h"]) > 0
    assert seen[-1] == (40, 40)                              # progress reached every trial
    assert "example_run" not in r.model_dump(mode="json")   # kept out of --json


def test_campaign_power_by_phase_brackets_the_average():
    from megacluster.campaign.scenarios import run_scenario

    r = run_scenario("meta-llama3-405b", trials=10)
    mw = r.phase_facility_mw
    assert mw["compute"] == pytest.approx(r.peak_facility_mw)
    assert min(mw.values()) <= r.avg_facility_mw <= max(mw.values())
    assert sum(r.step_phases_s.values()) == pytest.approx(r.step_time_s)
    assert r.failure_timeline_hours and len(r.failure_timeline_hours["cause"]) > 0


def test_progress_bar_is_silent_off_a_terminal_and_counts_calls():
    bar = ProgressBar("work", "items")                      # pytest captures: not a terminal
    assert not bar.enabled
    bar(1, 10)
    bar(10, 10)
    assert bar.calls == 2 and bar.bar is None
    with progress_bar("work", quiet=True) as b:
        assert not b.enabled
    shown = ProgressBar("work", "items", enabled=True, after_s=0.0)
    shown(3, 10)
    assert shown.bar is not None
    shown.close()
    assert shown.bar is None


def test_validate_interval_reader():
    from megacluster.report.html.validate_figs import interval

    assert interval({"interval": [90.0, 110.0]}) == (90.0, 110.0)
    assert interval({"interval": {"low": 1, "high": 2}}) == (1.0, 2.0)
    assert interval({"interval": None}) is None and interval({}) is None
    assert interval({"interval": "wide"}) is None


def test_validate_scatter_draws_error_bars_where_runs_have_intervals():
    pytest.importorskip("plotly")
    from megacluster.report.html.validate_figs import validate_report
    from megacluster.validate import load_runs, validate_runs

    data = load_runs()[:3]
    result = validate_runs(data)
    runs = [r.model_dump() for r in result["runs"]]
    p = runs[0]["predicted"]
    runs[0]["interval"] = [0.9 * p, 1.2 * p]                  # the field validate may carry
    _, _, panels, _ = validate_report({**result, "runs": runs}, data)
    points = [t for t in panels[0].fig.data if t.mode == "markers"]
    bars = [t.error_y for t in points if t.error_y is not None and t.error_y.array is not None]
    assert bars and max(bars[0].array) == pytest.approx(0.2 * p) and max(bars[0].arrayminus) == pytest.approx(0.1 * p)
    assert "prediction interval" in panels[0].caption
    _, _, plain, _ = validate_report(result, data)             # no interval: no error bars, and it says so
    assert all(t.error_y.array is None for t in plain[0].fig.data) and "No prediction intervals" in plain[0].caption
