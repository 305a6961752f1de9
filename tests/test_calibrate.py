"""megacluster calibrate: profile I/O, fits, --hardware resolution, bad input, a tiny real calibration, train
--hardware and --from-metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cli_helpers import run_cli
from megacluster import catalog
from megacluster.calibrate import fit
from megacluster.calibrate.profile import read_profile, use_hardware, write_profile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_overlay():
    """Each test starts and ends with the plain catalog (a --hardware overlay lasts for a process)."""
    yield
    for kind in ("gpus", "fabrics", "stacks"):
        catalog.use_entries(kind, [])


def _cpu_entry(**kw) -> dict:
    e = {"id": "cpu-test-1t", "name": "test CPU (1 thread, calibrated)", "generation": "cpu",
         "peak_tflops": {"bf16": 0.05, "fp32": 0.05}, "hbm_gib": 4096.0, "hbm_tbs": 0.005, "nvlink_gbs": 0.5,
         "intra_node_efficiency": 1.0, "intra_node_latency_us": 200.0, "tdp_w": 0.0, "price_usd": 0.0,
         "gemm_efficiency": 0.8, "sm_count": 1, "gemm_tile": [1, 1], "gemm_k_overhead": 2.0, "gemm_launch_us": 0.0,
         "attention_efficiency": 0.3, "attention_half_seq": 20.0, "attention_bwd_ratio": 0.6,
         "hbm_efficiency": 1.0, "op_overhead_us": 20.0, "source": "synthetic test entry"}
    e.update(kw)
    return e


def _profile(*entries, **extra) -> dict:
    return {"measured": {"date": "2026-01-01T00:00:00+00:00", "host": "test", "torch": "x"},
            "gpus": list(entries) or [_cpu_entry()], "fabrics": [], "fits": {"cpu-test-1t": {"threads": 1}},
            "points": {}, **extra}


@pytest.fixture
def cpu_profile(tmp_path) -> Path:
    p = tmp_path / "hw.yaml"
    write_profile(p, _profile())
    return p


# ------------------------------------------------------------------------------------------ profile I/O
def test_profile_round_trip(tmp_path):
    prof = _profile(_cpu_entry(), fits={"cpu-test-1t": {"threads": 1, "gemm_fp32": {"rate_flops": np.float64(4e10)}}})
    p = tmp_path / "hw.yaml"
    write_profile(p, prof)
    back = read_profile(p)
    assert back["gpus"] == prof["gpus"]
    assert back["fits"]["cpu-test-1t"]["gemm_fp32"]["rate_flops"] == 4e10
    assert back["megacluster_hardware_profile"] == 1


def test_profile_entry_takes_the_catalog_entrys_place_under_all_its_names(tmp_path):
    h100 = catalog.gpu("h100-sxm").model_dump(mode="json")
    slow = {**h100, "gemm_efficiency": h100["gemm_efficiency"] / 2}
    p = tmp_path / "hw.yaml"
    write_profile(p, _profile(slow))
    assert use_hardware(p) == "h100-sxm"
    assert catalog.gpu("h100").gemm_efficiency == pytest.approx(h100["gemm_efficiency"] / 2)   # an alias too
    catalog.use_entries("gpus", [])
    assert catalog.gpu("h100").gemm_efficiency == h100["gemm_efficiency"]


# ------------------------------------------------------------------------------------------ fits
def test_gemm_fit_recovers_known_parameters():
    truth = {"rate_flops": 5e13, "k0": 180.0, "launch_s": 4e-6}
    pts = [(m, n, k, float(fit.gemm_predict(truth, m, n, k, (128, 256), 132)))
           for m in (256, 1024, 4096) for n in (512, 4096) for k in (64, 512, 4096)]
    f = fit.fit_gemm(pts, (128, 256), 132)
    for key in truth:
        assert f[key] == pytest.approx(truth[key], rel=1e-6)
    assert f["mape"] < 1e-9


def test_attention_fit_recovers_known_parameters():
    rate, s0, ratio = 3e11, 150.0, 0.7
    pts = []
    for s in (64, 128, 512, 2048):
        F = 2.0 * 8 * 64 * s * s
        tf = F / (rate * s / (s + s0))
        pts.append((s, F, tf, 2.5 * F / (rate * s / (s + s0) * ratio)))
    f = fit.fit_attention(pts)
    assert f["rate_flops"] == pytest.approx(rate, rel=1e-6)
    assert f["half_seq"] == pytest.approx(s0, rel=1e-6)
    assert f["bwd_ratio"] == pytest.approx(ratio, rel=1e-6)


def test_attention_fit_without_a_plateau_falls_back_to_one_rate():
    pts = [(s, 2.0 * s * s, 2.0 * s * s / (1e6 * s), 1e-3) for s in (64, 256)]   # rate grows with s throughout
    f = fit.fit_attention(pts)
    assert f["half_seq"] == 0.0 and f["rate_flops"] > 0


def test_collective_fit_recovers_latency_and_bandwidth():
    lat, bw, n = 30e-6, 2e9, 4
    pts = []
    for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "p2p"):
        a, b = fit.collective_factors(op, n)
        pts += [(op, s, a * lat + b * s / bw) for s in (1 << 10, 1 << 16, 1 << 22)]
    f = fit.fit_collectives(pts, n)
    assert f["latency_s"] == pytest.approx(lat, rel=1e-6) and f["bytes_per_s"] == pytest.approx(bw, rel=1e-6)


def test_overhead_fit_one_and_several_runs():
    one = fit.fit_overhead([1.5], [1.0], [0.2])            # slower than predicted: a fixed overhead
    assert one == {"factor": 1.0, "overhead_s": pytest.approx(0.3)}
    faster = fit.fit_overhead([1.1], [1.0], [0.2])         # faster: the eager work shrinks
    assert faster["overhead_s"] == 0 and faster["factor"] == pytest.approx(0.5)
    other, scaled = np.array([1.0, 2.0, 4.0]), np.array([0.5, 0.3, 1.0])
    several = fit.fit_overhead(other + 1.4 * scaled + 0.25, other, scaled)
    assert several["factor"] == pytest.approx(1.4) and several["overhead_s"] == pytest.approx(0.25)


# ------------------------------------------------------------------------------------------ --hardware
def test_estimate_uses_the_profiles_device(capsys, cpu_profile):
    code, out, err = run_cli(capsys, "estimate", "--hardware", str(cpu_profile), "--model", "llama3.1-8b",
                             "--gpus", "1", "--seq-len", "256", "--global-batch", "1", "--framework", "torchtitan",
                             "--json")
    assert code == 0, err
    est = json.loads(out)
    assert est["gpu"] == "cpu-test-1t"
    assert est["time_s"]["op_overhead"] > 0                  # the CPU's eager-op time is counted


def test_hardware_replacing_a_catalog_gpu_changes_the_estimate(capsys, tmp_path):
    h100 = catalog.gpu("h100-sxm").model_dump(mode="json")
    p = tmp_path / "hw.yaml"
    write_profile(p, _profile({**h100, "gemm_efficiency": h100["gemm_efficiency"] / 2}))
    args = ["estimate", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--gpus", "8", "--zero", "3", "--json"]
    base = json.loads(run_cli(capsys, *args)[1])["step_time_s"]
    slow = json.loads(run_cli(capsys, *args, "--hardware", str(p))[1])["step_time_s"]
    assert slow > 1.2 * base


@pytest.mark.parametrize("content, expect", [
    ("gpus: [\n", "malformed YAML"),
    ("gpus:\n- id: h100-sxm\n", "not a megacluster hardware profile"),
    ("megacluster_hardware_profile: 7\ngpus: []\n", "format version"),
    ("megacluster_hardware_profile: 1\ngpus: []\n", "no gpus"),
    ("megacluster_hardware_profile: 1\ngpus:\n- id: x\n  name: x\n", "gpus x"),
])
def test_bad_profile_is_one_line(capsys, tmp_path, content, expect):
    p = tmp_path / "hw.yaml"
    p.write_text(content)
    for cmd in (["estimate", "--model", "llama3.1-8b", "--gpus", "8"], ["validate"], ["plan", "--model",
                "llama3.1-8b", "--gpus", "8"], ["campaign", "--model", "llama3.1-8b", "--gpus", "8", "--tokens",
                "1T"], ["train", "--steps", "1"]):
        code, out, err = run_cli(capsys, *cmd, "--hardware", str(p))
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, (cmd, err)


def test_profile_for_another_gpu_than_gpu_flag(capsys, cpu_profile):
    code, _, err = run_cli(capsys, "estimate", "--hardware", str(cpu_profile), "--gpu", "h100-sxm",
                           "--model", "llama3.1-8b", "--gpus", "8")
    assert code == 2 and "measured cpu-test-1t, not --gpu h100-sxm" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "train", "--hardware", str(cpu_profile), "--gpu", "h100-sxm", "--steps", "1")
    assert code == 2 and "not --gpu h100-sxm" in err


def test_metrics_without_steady_steps_is_one_line(capsys, tmp_path, cpu_profile):
    m = tmp_path / "run.jsonl"
    m.write_text(json.dumps({"event": "start", "world": 1, "config": {"warmup_steps_excluded": 2}}) + "\n"
                 + "".join(json.dumps({"step": i, "step_time_s": 0.1}) + "\n" for i in (1, 2)))
    code, _, err = run_cli(capsys, "calibrate", "--from-metrics", str(m), "--hardware", str(cpu_profile),
                           "--out", str(tmp_path / "o.yaml"))
    assert code == 2 and "no steady steps" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "calibrate", "--from-metrics", str(m), "--hardware", str(cpu_profile),
                           "--out", str(tmp_path / "o.yaml"), "--clock", "gpu")
    assert code == 2 and "--clock must be wall or cpu" in err
    m.write_text("not json\n")
    code, _, err = run_cli(capsys, "calibrate", "--from-metrics", str(m), "--hardware", str(cpu_profile),
                           "--out", str(tmp_path / "o.yaml"))
    assert code == 2 and "not JSON" in err


# ------------------------------------------------------------------------------------------ real runs
def _env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    e.pop("WORLD_SIZE", None)
    return e


def test_tiny_calibration_then_train_predicts_and_from_metrics_refines(tmp_path):
    """A seconds-long real calibration (one thread, no collectives), a CPU training run that prints the
    prediction beside the measurement, and a refinement from its metrics."""
    hw, metrics, refined = tmp_path / "hw.yaml", tmp_path / "run.jsonl", tmp_path / "hw2.yaml"
    mc = [sys.executable, "-m", "megacluster.cli"]
    r = subprocess.run(mc + ["calibrate", "--tiny", "--procs", "1", "--out", str(hw)], capture_output=True,
                       text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    prof = read_profile(hw)
    e = prof["gpus"][0]
    assert e["generation"] == "cpu" and e["peak_tflops"]["fp32"] > 0 and e["op_overhead_us"] >= 0
    assert prof["points"][e["id"]]["gemm_fp32"] and prof["measured"]["torch"]
    r = subprocess.run(mc + ["train", "--hardware", str(hw), "--steps", "4", "--global-batch", "2",
                             "--micro-batch", "2", "--seq-len", "32", "--metrics", str(metrics), "--json"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["predicted"]["hardware"] == f"1 x {e['id']}" and res["predicted"]["step_time_s"] > 0
    assert res["predicted"]["comparable"] and res["predicted_reason"] is None
    r = subprocess.run(mc + ["calibrate", "--from-metrics", str(metrics), "--out", str(refined), "--json"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    run = rep["runs"][0]
    assert abs(run["error_after"]) <= abs(run["error_before"]) + 1e-9 and rep["moved"]
    assert any(s["id"] == "torchtitan" for s in read_profile(refined)["stacks"])
    assert yaml.safe_load(refined.read_text())["refinements"][0]["runs"] == ["run.jsonl"]


@pytest.mark.parametrize("gpu, message", [("bogus", "bogus"), ("h100-sxm", "--gpu h100-sxm: this calibration "
                                                                           "measures the CPU")])
def test_calibrate_refuses_a_gpu_it_does_not_measure(tmp_path, gpu, message):
    pytest.importorskip("torch")
    from megacluster.calibrate.measure import calibrate
    from megacluster.errors import UserError

    with pytest.raises(UserError, match=message):
        calibrate(gpu=gpu, device="cpu", tiny=True)
