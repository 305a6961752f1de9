"""Predicted vs measured step time of megacluster's runtime on this CPU, from a calibrated hardware profile.

    PYTHONPATH=src python benchmarks/calibration_cpu.py [--hardware hw.yaml] [--steps 8] [--only 1,5]

Without --hardware it first runs ``megacluster calibrate --quick`` (and says how long it took). Then it trains
each layout below with ``megacluster train --hardware`` (1 process, or 2 under torchrun: FSDP, TP, PP) and
prints the prediction the run printed beside the median of its steady steps, in wall time and in rank 0's CPU
time (all its threads: on a shared machine the clue to what the step costs unloaded; it leaves out time spent
waiting, such as a pipeline bubble). A benchmark, not a test: the figures depend on the machine and on what else
runs on it (the load average is printed before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (label, processes, train flags): small Llama shapes, fp32 (the runtime's CPU precision)
LAYOUTS = [
    ("1p d128 L2 s128 mb8", 1, "--layers 2 --d-model 128 --heads 4 --kv-heads 2 --ffn 344 --seq-len 128 "
                                "--micro-batch 8"),
    ("1p d256 L4 s256 mb4", 1, "--layers 4 --d-model 256 --heads 4 --kv-heads 2 --ffn 688 --seq-len 256 "
                                "--micro-batch 4"),
    ("1p d512 L4 s256 mb4", 1, "--layers 4 --d-model 512 --heads 8 --kv-heads 4 --ffn 1376 --seq-len 256 "
                                "--micro-batch 4"),
    ("1p d256 L4 s512 mb2 full-recompute", 1, "--layers 4 --d-model 256 --heads 4 --kv-heads 2 --ffn 688 "
                                              "--seq-len 512 --micro-batch 2 --recompute full"),
    ("2p FSDP dp2 d256 L4 s256 mb4", 2, "--layers 4 --d-model 256 --heads 4 --kv-heads 2 --ffn 688 --seq-len 256 "
                                         "--micro-batch 4"),
    ("2p FSDP dp2 d512 L4 s256 mb4", 2, "--layers 4 --d-model 512 --heads 8 --kv-heads 4 --ffn 1376 "
                                         "--seq-len 256 --micro-batch 4"),
    ("2p TP2 d256 L4 s256 mb4", 2, "--layers 4 --d-model 256 --heads 4 --kv-heads 2 --ffn 688 --seq-len 256 "
                                    "--micro-batch 4 --tp 2"),
    ("2p TP2 d512 L4 s256 mb4", 2, "--layers 4 --d-model 512 --heads 8 --kv-heads 4 --ffn 1376 --seq-len 256 "
                                    "--micro-batch 4 --tp 2"),
    ("2p PP2 d256 L4 s256 mb2 x4", 2, "--layers 4 --d-model 256 --heads 4 --kv-heads 2 --ffn 688 --seq-len 256 "
                                       "--micro-batch 2 --global-batch 8 --pp 2"),
    ("2p PP2 d512 L4 s256 mb2 x4", 2, "--layers 4 --d-model 512 --heads 8 --kv-heads 4 --ffn 1376 "
                                       "--seq-len 256 --micro-batch 2 --global-batch 8 --pp 2"),
]


def _env(threads: int | None) -> dict:
    e = dict(os.environ, PYTHONPATH=str(ROOT / "src"), PYTHONUNBUFFERED="1")
    if threads:
        e["OMP_NUM_THREADS"] = str(threads)
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        e.pop(k, None)
    return e


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _cpu_ticks() -> list[int]:
    """The machine's CPU time counters (/proc/stat: user nice system idle iowait irq softirq steal), or []."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return []


def _steal(before: list[int], after: list[int]) -> float:
    """Share of the CPU time the hypervisor took (steal) between two readings: a VM's noise no load average
    shows. NaN without /proc/stat."""
    if not before or not after:
        return float("nan")
    d = [b - a for a, b in zip(before, after)]
    return d[7] / sum(d) if sum(d) else float("nan")


def run_layout(hw: Path, procs: int, flags: str, steps: int, threads: int | None, tmp: Path) -> dict:
    launch = [sys.executable, "-m", "megacluster.cli"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
        "-m", "megacluster.cli"]
    cmd = launch + ["train", "--hardware", str(hw), "--steps", str(steps), "--log-every", "1000", "--json",
                    *flags.split()]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads if procs == 1 else None),
                       timeout=1800, cwd=tmp)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hardware", type=Path, help="profile (default: run calibrate --quick first)")
    ap.add_argument("--steps", type=int, default=8, help="steps per run (the first 2 are warm-up)")
    ap.add_argument("--only", help="comma-separated layout numbers (1-based)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP threads of the 1-process runs (default: PyTorch's, every core)")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="calib-bench-"))
    hw = a.hardware
    print(f"load average before: {_load()}  ({os.cpu_count()} cores)")
    if hw is None:
        hw = tmp / "hw.yaml"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "megacluster.cli", "calibrate", "--quick", "--out", str(hw)],
                       check=True, env=_env(None), stdout=subprocess.DEVNULL)
        print(f"calibrate --quick: {time.perf_counter() - t:.0f} s -> {hw}")
    hw = hw.resolve()
    pick = [int(x) - 1 for x in a.only.split(",")] if a.only else range(len(LAYOUTS))
    rows = []
    print(f"{'#':>2} {'layout':38} {'device':22} {'predicted s':>11} {'measured s':>10} {'pred/meas':>9} "
          f"{'CPU s':>7} {'pred/CPU':>8} {'steal':>6}")
    for i in pick:
        label, procs, flags = LAYOUTS[i]
        ticks = _cpu_ticks()
        res = run_layout(hw, procs, flags, a.steps, a.threads, tmp)
        steal = _steal(ticks, _cpu_ticks())
        pred, meas = res["predicted"], res["step_time_s"]
        cpu = res.get("cpu_time_s") or float("nan")
        p = pred["step_time_s"] if pred else float("nan")
        rows.append((label, p, meas, cpu))
        dev = pred["hardware"].split(" x ", 1)[1] if pred else (res["predicted_reason"] or "")[:22]
        print(f"{i + 1:>2} {label:38} {dev:22} {p:11.4g} {meas:10.4g} {p / meas:9.2f} {cpu:7.4g} {p / cpu:8.2f} "
              f"{steal:6.1%}", flush=True)
    for name, col in (("wall", 2), ("CPU time of rank 0", 3)):
        errs = [abs(r[1] / r[col] - 1) for r in rows if r[1] == r[1] and r[col] == r[col]]
        if errs:
            within = sum(e <= 0.2 for e in errs)
            print(f"vs {name}: mean |error| {sum(errs) / len(errs):.1%}, worst {max(errs):.1%}, "
                  f"within 20%: {within}/{len(errs)}")
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
