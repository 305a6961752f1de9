"""Measurements of a training run: FLOPs per token, the device peak, per-step records (console and JSONL).

MFU uses the planner's convention (:func:`megacluster.physics.flops.model_flops_per_token`), so that measured and
predicted MFU compare: forward + backward of every matmul a token touches (input embedding excluded, output
projection included) plus attention without the causal halving (PaLM's 6N + 12Lhs); recomputation not counted.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..specs import ModelSpec


def flops_per_token(spec: ModelSpec, seq_len: int) -> float:
    """Model FLOPs per trained token (forward + backward), see the module docstring."""
    from ..physics.flops import model_flops_per_token

    return float(model_flops_per_token(spec, seq_len))


#: torch.cuda.get_device_name substrings -> catalog GPU ids (first match wins)
_GPU_NAMES = [
    (r"H200", "h200"), (r"H100.*(PCIe|PCI)", "h100-pcie"), (r"H100.*NVL", "h100-nvl"), (r"H800", "h800"), (r"H100", "h100-sxm"),
    (r"GH200", "gh200"), (r"B200", "b200"), (r"GB200", "gb200"), (r"B300|GB300", "b300"),
    (r"A100.*80", "a100-80gb"), (r"A100", "a100-40gb"), (r"MI300X", "mi300x"), (r"MI325X", "mi325x"),
    (r"MI355X", "mi355x"), (r"L40S", "l40s"),
]


def gpu_id_from_name(device_name: str) -> str | None:
    """Catalog id for a CUDA device name (``NVIDIA H100 80GB HBM3`` -> ``h100-sxm``), if known and present."""
    from .. import catalog

    known = set(catalog.names("gpus"))
    for pattern, gid in _GPU_NAMES:
        if re.search(pattern, device_name, re.I):
            if gid in known:
                return gid
            break
    return None


def measure_cpu_peak(dtype_name: str = "fp32", n: int = 512, reps: int = 5) -> float:
    """Best measured FLOP/s of an ``n``x``n`` matmul on this CPU with the current thread count."""
    import torch

    from .parallel import precision_dtype

    dt = precision_dtype(dtype_name)
    a = torch.randn(n, n).to(dt)
    b = torch.randn(n, n).to(dt)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


@dataclass
class Peak:
    """Peak FLOP/s of one device and where the figure comes from."""

    flops: float
    source: str


def device_peak(device, precision: str, gpu: str | None) -> Peak:
    """Catalog peak of the GPU named (``--gpu``) or detected; on CPU a measured matmul peak (said so in
    ``source``), whatever GPU the prediction is for."""
    import torch

    from .. import catalog

    if gpu and device.type == "cuda":
        g = catalog.gpu(gpu)
        return Peak(g.peak(precision), f"catalog {g.id} {precision} dense peak")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        gid = gpu_id_from_name(name)
        if gid:
            g = catalog.gpu(gid)
            return Peak(g.peak(precision), f"catalog {gid} {precision} dense peak (detected {name})")
        return Peak(float("nan"), f"{name} is not in the catalog (pass --gpu ID); MFU not computed")
    threads = torch.get_num_threads()
    kinds = sorted({"fp32", precision})
    best = max((measure_cpu_peak(k), k) for k in kinds)
    return Peak(best[0], f"measured {best[1]} matmul on this CPU ({threads} thread{'s' if threads > 1 else ''}; "
                         f"best of {'/'.join(kinds)}), not a data-sheet figure")


def memory_gib(device) -> float:
    """Peak memory of this process: CUDA max allocated, or the CPU process's max resident set."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


class MetricsLog:
    """Appends one JSON object per line to ``path`` (rank 0 only). Each line goes out in one ``write`` on an
    append-only descriptor, so a crash keeps every finished step and a reader never sees half a record; a
    run killed in the middle of a write leaves at most a torn last line, which the next run on the same file
    cuts off before it appends."""

    def __init__(self, path: Path | None, enabled: bool):
        self.fd = None
        if path is not None and enabled:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            _drop_torn_tail(self.fd)

    def write(self, record: dict) -> None:
        if self.fd is not None:
            os.write(self.fd, (json.dumps(record) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _drop_torn_tail(fd: int) -> None:
    """Truncate a file after its last newline (a record a killed writer did not finish)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return
    with open(fd, "rb", closefd=False) as f:
        pos = size
        while pos > 0:
            step = min(4096, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
    if pos != size:
        os.ftruncate(fd, pos)


def summarize(records: list[dict], skip: int) -> dict:
    """Median throughput over the steps after the first ``skip`` (warm-up, compilation) and the last loss."""
    import statistics

    steady = records[skip:] or records
    if not steady:
        return {}

    def med(key):
        vals = [r[key] for r in steady if r.get(key) is not None and r[key] == r[key]]
        return statistics.median(vals) if vals else None

    return {"steps": len(records), "steady_steps": len(steady), "final_loss": records[-1]["loss"],
            "tokens_per_s": med("tokens_per_s"), "tokens_per_s_per_device": med("tokens_per_s_per_device"),
            "tflops_per_device": med("tflops_per_device"), "mfu": med("mfu"), "step_time_s": med("step_time_s"),
            "cpu_time_s": med("cpu_time_s"),
            "memory_gib": max(r["memory_gib"] for r in records)}



class PeakGrowth:
    """How far this process's peak memory rose inside the ``with`` block, in bytes (``grown``): CUDA's peak
    allocated bytes on a GPU; on Linux the peak resident set (VmHWM, reset on entry through
    /proc/self/clear_refs) minus the resident set on entry. None where neither can be read."""

    def __init__(self, device):
        self.device = device
        self.grown: int | None = None
        self._base: int | None = None

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")                      # reset the peak resident set to the current one
            self._base = self._status("VmRSS")
        except OSError:
            self._base = None
        return self

    def __exit__(self, *exc):
        import torch

        if self._base is None:
            return False
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.grown = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            peak = self._status("VmHWM")
            self.grown = None if peak is None else peak - self._base
        return False
