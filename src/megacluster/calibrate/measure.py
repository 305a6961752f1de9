"""One calibration: run the microbenchmarks (``bench``), fit them (``fit``) and build the profile's device and
fabric entries in the catalog's format (``profile``).

A CPU is a device: its peak is measured (``runtime.metrics.measure_cpu_peak``, the same probe ``train`` uses
for MFU on a CPU), one entry per thread count (a single process uses every core; ``torchrun`` gives each
process one thread). The runtime trains in fp32 on a CPU (a bf16 matmul without hardware support runs far
slower), while the step model counts 16-bit elements: a CPU entry's 16-bit slot therefore holds the fp32
figures (``peak_tflops.bf16`` = the fp32 peak, bandwidths halved into 2-byte element rates) and says so.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import socket
from typing import Callable, Optional

from ..errors import UserError
from . import bench, fit


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "device"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        return 1.0


def _versions() -> dict:
    import numpy
    import torch

    v = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda
        try:
            v["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 (a build without NCCL)
            pass
    return v


def calibrate(*, gpu: Optional[str] = None, quick: bool = False, procs: Optional[int] = None,
              device: str = "auto", tiny: bool = False, tick: Callable[[str], None] = lambda s: None,
              plan: Callable[[int], None] = lambda n: None) -> dict:
    """Measure this machine and return the profile (see ``profile``). ``plan(n)`` is told the number of
    benchmark points first, ``tick(kind)`` after each (a progress bar)."""
    import torch

    from .. import catalog

    dev_type = "cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu"
    if dev_type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to PyTorch (use --device cpu)")
    if gpu is not None:
        catalog.gpu(gpu)                # an unknown id: one line, before any benchmark runs
        if dev_type == "cpu":
            raise UserError(f"--gpu {gpu}: this calibration measures the CPU (no CUDA device is used), so no catalog "
                            "GPU applies; drop --gpu, or run on the machine with that GPU")
    sw = bench.sweep(dev_type, quick, tiny)
    cores = os.cpu_count() or 1
    if dev_type == "cpu":
        settings = sorted({torch.get_num_threads(), 1}, reverse=True)
        procs = min(procs if procs is not None else 2, cores) if cores > 1 else (procs or 1)
    else:
        settings = [0]
        procs = procs if procs is not None else torch.cuda.device_count()
    # --quick on a CPU: the sweep of the every-core setting is thinned (many threads on a busy machine are slow
    # to time); the one-thread setting, timed on the thread's CPU clock, keeps the full quick sweep
    thin = bench.Sweep(sw.gemm_mn[::2], sw.gemm_k[::2], sw.attn_seq, sw.stream_bytes, sw.coll_bytes, sw.reps) \
        if quick and not tiny else sw
    sweeps = {t: (thin if t > 1 else sw) for t in settings}

    def n_points(x):
        return len(x.gemm_mn) ** 2 * len(x.gemm_k) + len(x.attn_seq) + 3 + 2

    plan(sum(n_points(sweeps[t]) for t in settings) + (1 if procs > 1 else 0))

    measured = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "host": socket.gethostname(), "platform": platform.platform(), **_versions(),
                "quick": bool(quick or tiny), "processes": procs}
    gpus, fits, points = [], {}, {}
    coll = None
    if procs > 1:
        sizes = sw.coll_bytes
        raw = bench.spawn_collectives(dev_type, procs, sizes, sw.reps)
        tick("collectives")
        # the tier is fitted to the all-gathers and reduce-scatters (the step model's unit); on a CPU whose
        # cores all run ranks, a collective also costs the CPU time of the backend's threads
        coll = {"fit": fit.fit_collectives(raw["rows"], procs, fit.UNIT_OPS if dev_type == "cpu" else None,
                                           backend_cpu=dev_type == "cpu" and procs >= cores)
                if raw["rows"] else None,
                "wall_fit": fit.fit_collectives(raw["rows"], procs, fit.UNIT_OPS) if raw["rows"] else None,
                "points": raw["rows"], "skipped": raw["skipped"], "layers": raw.get("layers")}
    if dev_type == "cpu":
        name = cpu_name()
        measured["device"] = name
        old = torch.get_num_threads()
        try:
            for threads in settings:
                torch.set_num_threads(threads)
                e, f, p = _cpu_entry(name, threads, sweeps[threads], tick, coll)
                gpus.append(e)
                fits[e["id"]], points[e["id"]] = f, p
        finally:
            torch.set_num_threads(old)
    else:
        e, f, p = _cuda_entry(gpu, sw, tick, coll, catalog)
        measured["device"] = torch.cuda.get_device_name(0)
        gpus.append(e)
        fits[e["id"]], points[e["id"]] = f, p
    fabric = _fabric_entry(gpus[0]["id"], coll, dev_type, measured)
    stacks = [_cpu_stack(fits[gpus[-1]["id"]], coll)] if dev_type == "cpu" and coll and coll.get("layers") else []
    return {"measured": measured, "gpus": gpus, "fabrics": [fabric] if fabric else [], "stacks": stacks,
            "fits": fits, "points": points}


def _cpu_stack(fits_1t: dict, coll: dict) -> dict:
    """The runtime stack (torchtitan's constants) with a ``cpu`` variant holding what its FSDP2 and DTensor TP
    wrappers add per layer on this machine, all measured by ``bench.parallel_layer_points`` (the runtime's tiny
    Llama, 2 vs 6 layers, every rank at once) against the plain tiny model run the same way:

    * DTensor TP: the host time per DTensor op (``dtensor_op_us``) = the TP layer's extra time, less the
      latency of the collectives counted in it (the step model prices those itself), divided by the DTensor
      ops counted per layer; the counts of forward and backward (``eager_ops_tp_layer_fwd/bwd``) go beside it,
      so full recompute reruns the forward's; and the rest of the model's (``eager_ops_tp_model``) and its
      collectives (``tp_model_collectives``: the embedding's reduce-scatter, the output layer's gathers).
    * FSDP2: ``fsdp_layer_overhead_s``, the extra time per layer (hooks, copies, the latency of its per-layer
      gathers, which the step model does not count per layer).
    * gradient clipping and AdamW over DTensor parameters (``tp_optimizer_layer_s``, ``fsdp_optimizer_layer_s``,
      per layer per step): DTensor's foreach ops and the all-reduce of each parameter's partial norm."""
    import copy

    from .. import catalog

    layers, f = coll["layers"], coll["fit"] or {}
    # the probe's collectives are latency-bound and run back to back: their wall time, not the backend's CPU
    lat, n = (coll.get("wall_fit") or f).get("latency_s", 0.0), int(f.get("ranks", 2))
    plain = layers.get("plain_per_layer_s", fits_1t["ops"]["per_layer_s"])
    plain_opt = layers.get("plain_opt_per_layer_s", 0.0)
    extra = {"fsdp_layer_overhead_s": max(0.0, layers.get("fsdp_per_layer_s", plain) - plain)}
    ops = layers.get("tp_ops_layer") or {}
    n_ops = ops.get("fwd_dtensor", 0) + ops.get("bwd_dtensor", 0)
    if n_ops > 0:
        # each all-gather or reduce-scatter of TP is an all-gather unit of n - 1 latency steps (physics/comm.py)
        coll_lat = (ops.get("fwd_collectives", 0) + ops.get("bwd_collectives", 0)) * (n - 1) * lat
        host = max(0.0, layers.get("tp_per_layer_s", plain) - plain - coll_lat)
        extra.update({"dtensor_op_us": host / n_ops * 1e6, "eager_ops_tp_layer_fwd": ops["fwd_dtensor"],
                      "eager_ops_tp_layer_bwd": ops["bwd_dtensor"]})
        model = layers.get("tp_ops_model") or {}
        extra.update({"eager_ops_tp_model": model.get("fwd_dtensor", 0) + model.get("bwd_dtensor", 0),
                      "tp_model_collectives": model.get("fwd_collectives", 0) + model.get("bwd_collectives", 0)})
    for mode in ("tp", "fsdp"):
        if f"{mode}_opt_per_layer_s" in layers:
            extra[f"{mode}_optimizer_layer_s"] = max(0.0, layers[f"{mode}_opt_per_layer_s"] - plain_opt)
    entry = copy.deepcopy(next(e for e in catalog.load("stacks")["stacks"] if e["id"] == "torchtitan"))
    from ..estimate import _variant

    entry["by_generation"]["cpu"] = {**_variant(entry["by_generation"], "cpu"), **extra}
    entry["source"] = (f"{entry['source']} | cpu variant: {', '.join(sorted(extra))} measured by megacluster "
                       f"calibrate (the runtime's tiny Llama, 2 vs 6 layers, {n} processes, against the plain "
                       "model run the same way; DTensor ops and collectives per layer counted with a "
                       "TorchDispatchMode; TP's own collectives' latency taken out, the step model prices them)")
    return entry


def _coll_fields(coll, halve: bool) -> dict:
    """Intra-node tier of a device entry from the collective fit (bandwidth per rank and per-step latency)."""
    if not coll or not coll["fit"]:
        return {"nvlink_gbs": 0.0}
    f = coll["fit"]
    return {"nvlink_gbs": f["bytes_per_s"] / 1e9 / (2.0 if halve else 1.0), "intra_node_efficiency": 1.0,
            "intra_node_latency_us": f["latency_s"] * 1e6}


def _cpu_entry(name: str, threads: int, sw, tick, coll):
    import torch

    from .. import catalog
    from ..runtime.metrics import measure_cpu_peak

    dev = torch.device("cpu")
    gemm = bench.gemm_points(dev, torch.float32, sw, tick)
    g = fit.fit_gemm([r for r in gemm], (1, 1), 1)
    peak = max(measure_cpu_peak("fp32", n=256 if sw.reps <= 2 else 1024), g["rate_flops"])
    attn = bench.attention_points(dev, torch.float32, sw, tick)
    a = fit.fit_attention(attn)
    stream = bench.stream_points(dev, sw, tick)
    mem = fit.fit_bandwidth(stream)
    ops = bench.op_points(dev, tick, reps=max(sw.reps, 5))
    c = catalog.stack_constants("torchtitan")["by_generation"]["default"]
    per_layer_ops = c.get("eager_ops_layer_fwd", 0) + c.get("eager_ops_layer_bwd", 0)
    op_us = ops["per_layer_s"] / per_layer_ops * 1e6 if per_layer_ops else 0.0
    eid = f"cpu-{_slug(name)}-{threads}t"
    source = (f"measured by megacluster calibrate on {socket.gethostname()} "
              f"({datetime.date.today().isoformat()}, {threads} thread{'s' if threads > 1 else ''}): fp32 (the "
              "runtime's CPU precision) in the 16-bit slot: peak_tflops.bf16 = the measured fp32 matmul peak, "
              "hbm_tbs and nvlink_gbs = measured bytes/s halved into 2-byte element rates; GEMM, attention and "
              "bandwidth constants fitted to the points in this file; op_overhead_us from the runtime's own "
              "tiny model; overlap_compute_slowdown 1: a collective's copies and reductions run on the same "
              "cores as compute, so hiding it saves nothing; tdp_w and price_usd not measured (0)")
    entry = {"id": eid, "name": f"{name} ({threads} thread{'s' if threads > 1 else ''}, calibrated)",
             "generation": "cpu", "peak_tflops": {"bf16": peak / 1e12, "fp32": peak / 1e12},
             "hbm_gib": round(ram_gib(), 2), "hbm_tbs": mem["bytes_per_s"] / 2 / 1e12,
             **_coll_fields(coll, halve=True), "tdp_w": 0.0, "price_usd": 0.0,
             "gemm_efficiency": min(1.0, g["rate_flops"] / peak), "sm_count": threads, "gemm_tile": [1, 1],
             "gemm_k_overhead": max(g["k0"], 1e-3), "gemm_launch_us": 0.0,
             "attention_efficiency": min(1.0, a["rate_flops"] / peak), "attention_half_seq": a["half_seq"],
             "attention_bwd_ratio": min(1.5, max(a["bwd_ratio"], 0.05)), "hbm_efficiency": 1.0,
             "overlap_compute_slowdown": 1.0, "op_overhead_us": op_us, "source": source}
    fits = {"threads": threads, "peak_flops": peak, "gemm_fp32": g, "attention_fp32": a, "memory": mem,
            "ops": {**ops, "ops_per_layer": per_layer_ops, "op_overhead_us": op_us},
            "collectives": coll["fit"] if coll else None, "parallel_layers": coll.get("layers") if coll else None}
    points = {"gemm_fp32": gemm, "attention_fp32": attn, "memory": stream,
              "collectives": coll["points"] if coll else [],
              "collectives_skipped": coll["skipped"] if coll else []}
    return entry, fits, points


def _cuda_entry(gpu_id, sw, tick, coll, catalog):
    import torch

    from ..runtime.metrics import gpu_id_from_name

    dev = torch.device("cuda", 0)
    name = torch.cuda.get_device_name(dev)
    detected = gpu_id_from_name(name)
    if gpu_id and detected and catalog.gpu(gpu_id).id != catalog.gpu(detected).id:
        raise UserError(f"--gpu {gpu_id} but this machine's GPU is {name} ({detected}); calibrate on a "
                        f"{gpu_id} or drop --gpu")
    base_id = gpu_id or detected
    if base_id is None:
        raise UserError(f"{name} is not in the catalog; pass --gpu ID of the nearest catalog GPU to take its "
                        "data-sheet peak, memory and power from")
    base = catalog.gpu(base_id)
    props = torch.cuda.get_device_properties(dev)
    gemm = bench.gemm_points(dev, torch.bfloat16, sw, tick)
    g = fit.fit_gemm(gemm, tuple(base.gemm_tile), props.multi_processor_count)
    peak = base.peak("bf16")
    attn = bench.attention_points(dev, torch.bfloat16, sw, tick)
    a = fit.fit_attention(attn)
    stream = bench.stream_points(dev, sw, tick)
    mem = fit.fit_bandwidth(stream)
    ops = bench.op_points(dev, tick, reps=max(sw.reps, 5))
    entry = base.model_dump(mode="json")
    entry.update({"gemm_efficiency": min(1.0, g["rate_flops"] / peak), "gemm_k_overhead": max(g["k0"], 1e-3),
                  "gemm_launch_us": g["launch_s"] * 1e6, "sm_count": props.multi_processor_count,
                  "attention_efficiency": min(1.0, a["rate_flops"] / peak), "attention_half_seq": a["half_seq"],
                  "attention_bwd_ratio": min(1.5, max(a["bwd_ratio"], 0.05)),
                  "hbm_efficiency": min(1.0, mem["bytes_per_s"] / (base.hbm_tbs * 1e12)), "op_overhead_us": 0.0,
                  "source": f"{base.source} | efficiency constants measured by megacluster calibrate on "
                            f"{socket.gethostname()} ({datetime.date.today().isoformat()}, {name})"})
    if coll and coll["fit"]:
        f = coll["fit"]
        entry["intra_node_efficiency"] = min(1.0, f["bytes_per_s"] / (base.nvlink_gbs * 1e9)) if base.nvlink_gbs \
            else None
        entry["intra_node_latency_us"] = f["latency_s"] * 1e6
    fits = {"peak_flops": peak, "gemm_bf16": g, "attention_bf16": a, "memory": mem, "ops": ops,
            "collectives": coll["fit"] if coll else None}
    points = {"gemm_bf16": gemm, "attention_bf16": attn, "memory": stream,
              "collectives": coll["points"] if coll else [], "collectives_skipped": coll["skipped"] if coll else []}
    return entry, fits, points


def _fabric_entry(device_id: str, coll, dev_type: str, measured: dict) -> Optional[dict]:
    """The fabric entry: on one node only the intra-node transport is measured; its latency stands in for
    the network's until a calibration across nodes measures that tier."""
    if not coll or not coll["fit"]:
        return None
    f = coll["fit"]
    backend = "NCCL" if dev_type == "cuda" else "gloo (TCP loopback)"
    return {"id": f"{device_id}-local", "name": f"{backend} within {measured['host']} (calibrated)",
            "kind": "ethernet" if dev_type == "cpu" else "infiniband", "efficiency": 1.0,
            "base_latency_us": f["latency_s"] * 1e6,
            "tiers": [{"name": "node (measured)", "reach_gpus": int(f["ranks"]), "latency_us": 0.0}],
            "source": f"measured by megacluster calibrate with {f['ranks']} {backend} processes on one node "
                      f"({measured['date']}): all-reduce, all-gather, reduce-scatter, all-to-all and p2p over "
                      f"message sizes, one bandwidth and latency fitted; the scale-out tier is not measured"}
