"""The CPU step model's pricing of DTensor tensor parallelism and FSDP2 over gloo (issue 17): collectives timed
as a step pays them, DTensor ops counted per layer times their measured host time, clipping and AdamW over
DTensor parameters; and that a catalog (GPU) estimate does not see any of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from megacluster import catalog
from megacluster.calibrate import bench, fit
from megacluster.cluster import make_cluster
from megacluster.estimate import estimate
from megacluster.specs import Layout, ModelSpec, StackSpec

ROOT = Path(__file__).resolve().parents[1]


from test_calibrate import _cpu_entry, _no_overlay  # noqa: E402,F401  (_no_overlay: autouse)


# ------------------------------------------------------------------------------------------ measurements
def test_collective_tier_fit_on_unit_ops_with_the_backends_cpu_time():
    lat, bw, n, cpu = 100e-6, 1e9, 2, 0.5e-3
    pts = []
    for op in ("all_gather", "reduce_scatter", "all_to_all"):
        a, b = fit.collective_factors(op, n)
        # the all-to-all is 10x cheaper here: a fit over every op would be pulled down by it
        k = 0.1 if op == "all_to_all" else 1.0
        pts += [[op, s, k * (a * lat + b * s / bw), cpu] for s in (1 << 12, 1 << 16, 1 << 20)]
    wall = fit.fit_collectives(pts, n, fit.UNIT_OPS)
    assert wall["latency_s"] == pytest.approx(lat, rel=1e-6) and wall["bytes_per_s"] == pytest.approx(bw, rel=1e-6)
    assert wall["ops"] == ["all_gather", "reduce_scatter"] and not wall["backend_cpu"]
    both = fit.fit_collectives(pts, n, fit.UNIT_OPS, backend_cpu=True)
    # the backend's CPU time is a fixed cost per call: it lands in the latency (n - 1 = 1 ring step)
    assert both["latency_s"] == pytest.approx(lat + cpu, rel=1e-6)
    assert both["bytes_per_s"] == pytest.approx(bw, rel=1e-6)
    # three-column rows (older profiles, CUDA) still fit; ops none of which was measured: every row
    assert fit.fit_collectives([r[:3] for r in pts], n, ("p2p",))["points"] == len(pts)


def test_typical_time_is_the_median_repetition(monkeypatch):
    ticks = iter([0.0, 1.0,   # rep 1: 1.0 s
                  1.0, 4.0,   # rep 2: 3.0 s
                  4.0, 6.0])  # rep 3: 2.0 s
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    calls = []
    assert bench.typical_time(lambda: calls.append(1), reps=3) == 2.0
    assert len(calls) == 4              # one warm-up call, then three timed


def test_count_parallel_ops_tells_dtensor_ops_from_plain_ones():
    """One process, a one-rank mesh: the runtime's TP plan makes most ops DTensor ops (no collectives on one
    rank); the plain model has none. Run in a subprocess (it starts a process group)."""
    pytest.importorskip("torch")
    code = """
import json, tempfile, torch, torch.distributed as dist, torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from megacluster.calibrate.bench import count_parallel_ops
from megacluster.runtime.model import Transformer
from megacluster.runtime.parallel import apply_tp
from megacluster.specs import ModelSpec
dist.init_process_group("gloo", init_method="file://" + tempfile.mkdtemp() + "/s", rank=0, world_size=1)
spec = ModelSpec(name="p", n_layers=2, d_model=16, n_heads=2, n_kv_heads=1, ffn_hidden=32, vocab=64,
                 mlp="swiglu", seq_len=8)
m = Transformer(spec, 8); m.init_weights(0)
x = torch.randint(0, 64, (1, 8))
fwd = lambda: F.cross_entropy(m(x).flatten(0, 1).float(), x.flatten())
out = {"plain": count_parallel_ops(fwd, lambda l: l.backward())}
apply_tp(m, init_device_mesh("cpu", (1,)), True)
out["tp"] = count_parallel_ops(fwd, lambda l: l.backward())
dist.destroy_process_group()
print(json.dumps(out))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    plain, tp = out["plain"], out["tp"]
    assert plain["fwd_dtensor"] == plain["bwd_dtensor"] == 0 and plain["fwd_plain"] > 50
    assert tp["fwd_dtensor"] > 20 and tp["bwd_dtensor"] > tp["fwd_dtensor"]
    assert tp["fwd_collectives"] == tp["bwd_collectives"] == 0


# ------------------------------------------------------------------------------------------ the step model
CPU = _cpu_entry(id="cpu-tp-test-1t")
MODEL = ModelSpec(name="t", n_layers=4, d_model=256, n_heads=4, n_kv_heads=2, ffn_hidden=688, vocab=256,
                  mlp="swiglu", seq_len=256)


def _use_cpu_variant(**extra) -> None:
    """The CPU entry and a torchtitan stack whose ``cpu`` variant carries ``extra`` (as calibrate writes it)."""
    import copy

    entry = copy.deepcopy(next(e for e in catalog.load("stacks")["stacks"] if e["id"] == "torchtitan"))
    entry["by_generation"]["cpu"] = {**entry["by_generation"]["default"], **extra}
    catalog.use_entries("gpus", [CPU])
    catalog.use_entries("stacks", [entry])


def _est(tp=1, dp=1, recompute="none"):
    cluster = make_cluster(catalog.gpu(CPU["id"]), tp * dp, None, gpus_per_node=tp * dp)
    lay = Layout(tp=tp, dp=dp, micro_batch=4, global_batch=4 * dp, seq_len=256, recompute=recompute, zero=3,
                 sequence_parallel=True, precision="bf16")
    return estimate(MODEL, cluster, lay, StackSpec(framework="torchtitan"), check=False)


def test_dtensor_ops_and_the_optimizer_over_dtensors_are_priced_per_layer():
    _use_cpu_variant()
    base = {k: _est(tp=2, recompute=r) for k, r in (("none", "none"), ("full", "full"))}
    op_us, fwd, bwd, opt = 200.0, 40.0, 100.0, 0.01
    _use_cpu_variant(dtensor_op_us=op_us, eager_ops_tp_layer_fwd=fwd, eager_ops_tp_layer_bwd=bwd,
                     eager_ops_tp_model=10.0, tp_model_collectives=0.0, tp_optimizer_layer_s=opt)
    layers = MODEL.n_layers
    e = _est(tp=2)
    added = e.time_s["op_overhead"] - base["none"].time_s["op_overhead"]
    assert added == pytest.approx(layers * ((fwd + bwd) * op_us * 1e-6 + opt))
    assert e.time_s["output_layer"] - base["none"].time_s["output_layer"] == pytest.approx(10 * op_us * 1e-6)
    assert e.step_time_s - base["none"].step_time_s == pytest.approx(added + 10 * op_us * 1e-6)
    # full recompute runs the forward's DTensor ops a second time
    full = _est(tp=2, recompute="full").time_s["op_overhead"] - base["full"].time_s["op_overhead"]
    assert full == pytest.approx(layers * ((2 * fwd + bwd) * op_us * 1e-6 + opt))
    # one process: no DTensor, nothing added
    plain = _est(tp=1)
    _use_cpu_variant()
    assert plain.step_time_s == pytest.approx(_est(tp=1).step_time_s)


def test_model_level_tp_collectives_are_priced_as_tp_units():
    _use_cpu_variant(dtensor_op_us=0.0, eager_ops_tp_model=0.0, tp_model_collectives=0.0)
    a = _est(tp=2)
    _use_cpu_variant(dtensor_op_us=0.0, eager_ops_tp_model=0.0, tp_model_collectives=4.0)
    b = _est(tp=2)
    per_layer_units = 8.0
    # tp_comm holds the layers' 8 all-gather units each; the model-level ones go with the output layer
    unit = a.time_s["tp_comm"] / (MODEL.n_layers * per_layer_units)
    assert b.time_s["output_layer"] - a.time_s["output_layer"] == pytest.approx(4 * unit)


def test_fsdp_optimizer_over_dtensors_and_old_profiles_tp_figure():
    _use_cpu_variant()
    base_dp, base_tp = _est(dp=2), _est(tp=2)
    _use_cpu_variant(fsdp_optimizer_layer_s=0.005, tp_layer_overhead_s=0.02)     # a profile of before
    assert _est(dp=2).step_time_s - base_dp.step_time_s == pytest.approx(MODEL.n_layers * 0.005)
    assert _est(tp=2).step_time_s - base_tp.step_time_s == pytest.approx(MODEL.n_layers * 0.02)


def test_catalog_gpu_estimates_do_not_see_the_cpu_constants():
    """The constants live in a profile's cpu variant only: a catalog GPU's estimate is the same with it."""
    from megacluster.catalog import gpu

    lay = Layout(tp=2, dp=4, micro_batch=1, global_batch=8, seq_len=4096, zero=3, precision="bf16")
    cluster = make_cluster(gpu("h100-sxm"), 8, None)
    spec = catalog.model("llama3.1-8b")
    before = estimate(spec, cluster, lay, StackSpec(framework="torchtitan")).step_time_s
    _use_cpu_variant(dtensor_op_us=500.0, eager_ops_tp_layer_fwd=40.0, eager_ops_tp_layer_bwd=100.0,
                     tp_optimizer_layer_s=1.0, fsdp_optimizer_layer_s=1.0)
    after = estimate(spec, cluster, lay, StackSpec(framework="torchtitan")).step_time_s
    assert after == before


def test_compute_benchmarks_take_the_median_on_a_cpu_and_the_best_on_a_gpu(monkeypatch):
    import torch

    assert bench.stat_for(torch.device("cpu")) == "median" and bench.stat_for(torch.device("cuda")) == "best"
    for stat, want in (("median", 2.0), ("best", 1.0)):
        ticks = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])
        monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
        assert bench.best_time(lambda: None, torch.device("cpu"), reps=3, wall=True, stat=stat) == want
    with pytest.raises(ValueError):
        bench.best_time(lambda: None, torch.device("cpu"), reps=1, stat="mean")


def test_cpu_gemm_points_average_the_three_layouts_of_a_linear_layer():
    import torch

    cpu = bench.gemm_layouts(8, 4, 16, torch.device("cpu"), torch.float32)
    assert len(cpu) == 3 and {tuple(f().shape) for f in cpu} == {(8, 4)}
    assert len(bench.gemm_layouts(8, 4, 16, torch.device("meta"), torch.float32)) == 1


def test_gpu_train_benchmark_refuses_a_bad_profile_in_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_train", ROOT / "benchmarks" / "gpu_train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    bad = tmp_path / "hw.yaml"
    bad.write_text("gpus:\n- id: h100-sxm\n")
    assert mod.main(["--smoke", "--hardware", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a megacluster hardware profile" in err and len(err.strip().splitlines()) == 1
