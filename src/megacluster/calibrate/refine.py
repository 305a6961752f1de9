"""``calibrate --from-metrics``: refine a profile's stack-level constants from measured training runs.

Each run is a metrics JSONL of ``megacluster train --metrics`` (a ``start`` record with the config, then one
record per step). Its measured step time is the median of the steady steps (after the warm-up steps the
runtime leaves out of its own summary). The step model predicts the same run from the profile; then
(``fit.fit_overhead``)

    measured = other + x (memory-bound + eager-op time) + b

moves two constants of the runtime's stack (torchtitan's, on the device's generation): ``step_overhead_s``
(+ b) and the eager, non-matmul work by the factor x (``elementwise_bytes`` and the ``eager_ops_*`` counts).
One run moves one of them (b where the run was slower than predicted, x where faster); two or more runs fit both
by least squares on relative error. The refined stack entry goes into the profile's ``stacks:`` (the catalog's
entry with a variant for this generation), so that ``--hardware`` predicts with it.
"""

from __future__ import annotations

import copy
import datetime
import json
import statistics
from pathlib import Path
from typing import Optional

from pydantic import ValidationError

from .. import catalog
from ..errors import UserError
from . import fit
from .profile import read_profile, write_profile

EAGER_KEYS = ("eager_ops_layer_fwd", "eager_ops_layer_bwd", "eager_ops_model", "eager_ops_optimizer_layer",
              "eager_ops_optimizer")


def read_run(path: Path, key: str = "step_time_s") -> dict:
    """(config, measured median step seconds, steady steps, threads) of one metrics JSONL; no steady step or
    no start record: a one-line UserError. ``key``: step_time_s (wall) or cpu_time_s (rank 0's CPU time)."""
    p = Path(path)
    from ..userfile import MAX_TEXT_BYTES, read_text

    start, steps = None, []
    for i, line in enumerate(read_text(p, "--from-metrics", MAX_TEXT_BYTES).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"--from-metrics {p}: line {i} is not JSON (write it with `megacluster train "
                            "--metrics FILE`)") from None
        if not isinstance(rec, dict):
            raise UserError(f"--from-metrics {p}: line {i} is not a JSON object")
        if rec.get("event") == "start":
            start, steps = rec, []            # a resumed run appends a new start: keep the last segment
        elif "step_time_s" in rec and "step" in rec:
            steps.append(rec)
    if start is None or not isinstance(start.get("config"), dict):
        raise UserError(f"--from-metrics {p}: no start record with the run's config (is it a `megacluster train "
                        "--metrics` file?)")
    skip = int(start["config"].get("warmup_steps_excluded", 2))
    steady = [r[key] for r in steps[skip:] if isinstance(r.get(key), (int, float))]
    if not steady and key != "step_time_s" and steps[skip:]:
        raise UserError(f"--from-metrics {p}: the steps have no {key} (recorded by newer `megacluster train`)")
    if not steady:
        raise UserError(f"--from-metrics {p}: no steady steps ({len(steps)} step(s), the first {skip} are "
                        "warm-up); train for more steps")
    return {"name": p.name, "config": start["config"], "world": int(start.get("world", 1)),
            "threads": start.get("threads"), "measured_s": statistics.median(steady), "steady_steps": len(steady),
            "hardware": start["config"].get("hardware")}


def _predict(run: dict, hardware) -> object:
    from ..specs import Layout, ModelSpec, StackSpec
    from .predict import predict_run

    c = run["config"]
    try:
        model, layout = ModelSpec(**c["model"]), Layout(**c["layout"])
        stack = StackSpec(**c["stack"]) if c.get("stack") else None
    except (ValidationError, KeyError, TypeError) as e:
        raise UserError(f"--from-metrics {run['name']}: the start record's config is not readable ({e})") from None
    est, note = predict_run(hardware, model, layout, c.get("precision", "fp32"), run["world"], run["threads"],
                            c.get("gpu"), bool(c.get("compile")), stack)
    if est is None:
        raise UserError(f"--from-metrics {run['name']}: {note}")
    return est


def refine(metrics: list[Path], hardware: Optional[Path], out: Path, clock: str = "wall") -> dict:
    """Fit, write the refined profile to ``out`` and return the report (runs before/after, constants moved).
    ``clock``: wall (the step time) or cpu (rank 0's CPU time per step: on a shared machine, what the step
    costs without the other work; it leaves out waiting, so use it for one-process runs)."""
    if clock not in ("wall", "cpu"):
        raise UserError(f"--clock must be wall or cpu, not {clock!r}")
    runs = [read_run(p, "cpu_time_s" if clock == "cpu" else "step_time_s") for p in metrics]
    hardware = hardware or runs[0]["hardware"]
    if not hardware:
        raise UserError("--from-metrics needs --hardware PROFILE (the run was not trained with --hardware)")
    profile = read_profile(hardware)
    before = [_predict(r, hardware) for r in runs]
    device = catalog.gpu(before[0].gpu)
    framework = (runs[0]["config"].get("stack") or {}).get("framework", "torchtitan")
    base = _stack_entry(profile, framework)
    variant = _variant_of(base, device.generation)
    scaled = [e.time_s["memory_bound"] + e.time_s["op_overhead"] + _ops_out(e, variant, device) for e in before]
    other = [e.step_time_s - s for e, s in zip(before, scaled)]
    f = fit.fit_overhead([r["measured_s"] for r in runs], other, scaled)
    new = dict(variant)
    moved = {}
    if abs(f["factor"] - 1.0) > 1e-6:
        for k in ("elementwise_bytes", "compiled_elementwise_bytes", *EAGER_KEYS):
            if k in new:
                new[k] = float(new[k]) * f["factor"]
                moved[k] = (float(variant[k]), new[k])
    if f["overhead_s"] > 0:
        new["step_overhead_s"] = float(variant.get("step_overhead_s", 0.0)) + f["overhead_s"]
        moved["step_overhead_s"] = (float(variant.get("step_overhead_s", 0.0)), new["step_overhead_s"])
    entry = copy.deepcopy(base)
    entry["by_generation"] = {**entry["by_generation"], device.generation: new}
    entry["source"] = (f"{base.get('source', '')} | {device.generation} variant refined by megacluster calibrate "
                       f"--from-metrics ({', '.join(r['name'] for r in runs)})")
    profile["stacks"] = [s for s in profile.get("stacks") or [] if s["id"] != entry["id"]] + [entry]
    method = (f"measured ({clock} time) = other + x (memory-bound + eager ops) + b; "
              + ("one run: b if slower than predicted, else x" if len(runs) == 1 else "least squares over runs"))
    profile.setdefault("refinements", []).append({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": [r["name"] for r in runs], "method": method, "factor": f["factor"], "overhead_s": f["overhead_s"],
        "moved": {k: list(v) for k, v in moved.items()}})
    write_profile(out, profile)
    after = [_predict(r, out) for r in runs]
    rows = [{"name": r["name"], "measured_s": r["measured_s"], "before_s": b.step_time_s, "after_s": a.step_time_s,
             "error_before": b.step_time_s / r["measured_s"] - 1.0,
             "error_after": a.step_time_s / r["measured_s"] - 1.0}
            for r, b, a in zip(runs, before, after)]
    return {"runs": rows, "moved": moved, "method": method, "factor": f["factor"], "overhead_s": f["overhead_s"],
            "out": str(out)}


def _ops_out(est, variant: dict, device) -> float:
    """Host time of the output layer's eager ops, per step (they sit in the output-layer line)."""
    if est.time_s["output_layer"] <= 0:
        return 0.0
    return est.n_microbatches * variant.get("eager_ops_model", 0.0) * device.op_overhead_us * 1e-6


def _stack_entry(profile: dict, framework: str) -> dict:
    for s in profile.get("stacks") or []:
        if s["id"] == framework:
            return copy.deepcopy(s)
    entry = copy.deepcopy(catalog.stack_constants(framework))
    for e in catalog.load("stacks")["stacks"]:
        if e["id"] == entry["id"]:
            entry = copy.deepcopy(e)
    return entry


def _variant_of(entry: dict, generation: str) -> dict:
    from ..estimate import _variant

    return dict(_variant(entry["by_generation"], generation))
