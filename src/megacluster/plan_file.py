"""Plan files: a model, a cluster, a layout and a software stack, saved as YAML by ``megacluster plan --out``
and read back by ``megacluster estimate --plan`` (and by training).

Format (every key but ``layout`` and ``stack`` is a scalar)::

    model: llama3.1-405b          # catalog id, or a path to a config.json / model YAML
    gpu: h100-sxm
    gpus: 16384
    fabric: roce
    nic_gbps: 400
    nics_per_node: 8
    gpus_per_node: 8
    layout: {tp: 8, pp: 16, dp: 128, cp: 1, ep: 1, vp: 1, micro_batch: 1, global_batch: 2048, seq_len: 8192,
             sequence_parallel: true, recompute: none, zero: 1, dp_replicate: 1, precision: bf16}
    stack: {framework: megatron, compile: false, async_tp: false, fp8_recipe: null, schedule: null, ...}
    predicted: {...}              # optional, written for the reader; ignored when loading

A model path is stored relative to the plan file's folder, and a relative model path is read so. A layout
without ``dp_replicate`` (a plan written before HSDP replicas existed) reads as 1.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from . import catalog
from .cluster import make_cluster
from .errors import UserError, short
from .layout_check import layout_problems
from .specs import ClusterSpec, Layout, ModelSpec, StackSpec

REQUIRED = ("model", "gpu", "gpus", "layout")
OPTIONAL = ("fabric", "nic_gbps", "nics_per_node", "gpus_per_node", "nvlink_domain", "stack", "predicted")


class Plan(BaseModel):
    """A loaded plan: everything ``estimate`` needs."""

    model: ModelSpec
    model_name: str
    cluster: ClusterSpec
    layout: Layout
    stack: StackSpec


def plan_dict(model_name: str, cluster: ClusterSpec, layout: Layout, stack: Optional[StackSpec] = None,
              estimate: Any = None) -> dict[str, Any]:
    """The plan as the plain mapping written to YAML."""
    node = cluster.node
    d: dict[str, Any] = {"model": str(model_name), "gpu": cluster.gpu.id, "gpus": int(cluster.n_gpus),
                         "fabric": cluster.fabric.id, "nic_gbps": float(node.nic_gbps),
                         "nics_per_node": int(node.nics_per_node), "gpus_per_node": int(node.gpus_per_node)}
    if node.nvlink_domain != node.gpus_per_node:
        d["nvlink_domain"] = int(node.nvlink_domain)
    d["layout"] = layout.model_dump()
    d["stack"] = (stack or StackSpec()).model_dump()
    if estimate is not None:
        d["predicted"] = {"step_time_s": float(estimate.step_time_s), "mfu": float(estimate.mfu),
                          "tokens_per_s_per_gpu": float(estimate.tokens_per_s_per_gpu),
                          "memory_gib_per_gpu": float(estimate.memory_gib_per_gpu)}
    return d


HEADER = "# megacluster plan"


def _is_model_path(name: str) -> bool:
    """Whether a plan's ``model`` names a file or folder (as :func:`catalog.model` decides), not a catalog id."""
    return name.endswith((".json", ".yaml", ".yml")) or "/" in name or os.sep in name


def model_ref_for(model_name: str, plan_path: str | Path) -> str:
    """What a plan at ``plan_path`` records for the model: a catalog id as given; a path relative to the plan
    file's folder (so that the plan and its model can move together), absolute where no relative path exists."""
    if not _is_model_path(model_name):
        return model_name
    target = Path(model_name).expanduser().resolve()
    try:
        return os.path.relpath(target, Path(plan_path).expanduser().resolve().parent)
    except ValueError:                       # another drive (Windows)
        return str(target)


def is_plan_file(path: str | Path) -> bool:
    """Whether ``path`` holds a megacluster plan (what ``plan --out`` wrote, or a mapping with the plan keys)."""
    try:
        with open(path, "rb") as f:
            if f.read(len(HEADER)).decode("utf-8", "replace") == HEADER:
                return True
        data = catalog.read_yaml_or_json(path, "plan")
    except (OSError, UserError):
        return False
    return isinstance(data, dict) and all(k in data for k in REQUIRED) and all(k in REQUIRED + OPTIONAL for k in data)


def check_plan_target(path: str | Path, force: bool = False) -> Path:
    """Refuse to write a plan over a directory, or over a file that is not a megacluster plan (unless
    ``force``): ``plan --out important.txt`` must not destroy ``important.txt``. Returns the path."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"--out {p} is a directory; give a file name such as {p / 'plan.yaml'}")
    if not p.parent.is_dir():
        raise UserError(f"cannot write plan {p}: folder {p.parent} does not exist")
    if (p.exists() or p.is_symlink()) and not force and not is_plan_file(p):
        raise UserError(f"{p} exists and is not a megacluster plan; give another --out, or --force to replace it")
    return p


def save_plan(path: str | Path, model_name: str, cluster: ClusterSpec, layout: Layout,
              stack: Optional[StackSpec] = None, estimate: Any = None, force: bool = False) -> Path:
    """Write a plan YAML. ``model_name`` is what ``load_plan`` passes to :func:`catalog.model` (catalog id or
    path; a path is stored relative to the plan's folder); ``estimate`` (a StepEstimate), when given, is
    recorded under ``predicted`` for the reader.

    The plan is written to a temporary file in the same folder and renamed over ``path``, so a failed write
    leaves the old file whole; a file that is not a plan is not replaced unless ``force``."""
    p = check_plan_target(path, force)
    text = HEADER + " (read by `megacluster estimate --plan`)\n" + yaml.safe_dump(
        plan_dict(model_ref_for(model_name, p), cluster, layout, stack, estimate), sort_keys=False,
        default_flow_style=False)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        tmp = None
    except OSError as e:
        raise UserError(f"cannot write plan {p}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return p


def _model(name: Any, where: Path) -> ModelSpec:
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: model: expected a catalog id or a path, got {short(name)}")
    if _is_model_path(name):
        p = Path(name).expanduser()
        # relative to the plan's folder (as plan --out writes it); a plan written before that, with a path
        # relative to the folder it was made in, still loads from there
        if not p.is_absolute() and ((where.parent / p).exists() or not p.exists()):
            name = str(where.parent / p)
    try:
        return catalog.model(name)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


def load_plan(path: str | Path) -> Plan:
    """Read and check a plan file; anything malformed or inconsistent is a one-line UserError."""
    p = Path(path)
    data = catalog.read_yaml_or_json(p, "plan")
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping with keys {', '.join(REQUIRED)} (a file from `megacluster plan "
                        f"--out`)")
    unknown = [k for k in data if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise UserError(f"{p}: unknown key {short(unknown[0])} (plan keys: {', '.join(REQUIRED + OPTIONAL)})")
    missing = [k for k in REQUIRED if data.get(k) is None]
    if missing:
        raise UserError(f"{p}: missing {short(missing[0])} (plan keys: {', '.join(REQUIRED)} are required)")
    model = _model(data["model"], p)
    for k in ("gpus", "nics_per_node", "gpus_per_node", "nvlink_domain"):
        v = data.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise UserError(f"{p}: {k}: expected a positive whole number, got {short(v)}")
    nic = data.get("nic_gbps")
    if nic is not None and (isinstance(nic, bool) or not isinstance(nic, (int, float)) or nic <= 0):
        raise UserError(f"{p}: nic_gbps: expected a positive number, got {short(nic)}")
    for k in ("gpu", "fabric"):
        if data.get(k) is not None and not isinstance(data[k], str):
            raise UserError(f"{p}: {k}: expected a catalog id, got {short(data[k])}")
    try:
        cluster = make_cluster(data["gpu"], data["gpus"], fabric=data.get("fabric"), nic_gbps=nic,
                               nics_per_node=data.get("nics_per_node"), gpus_per_node=data.get("gpus_per_node"),
                               nvlink_domain=data.get("nvlink_domain"))
    except UserError as e:
        raise UserError(f"{p}: {e}") from None
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, f"{p}: cluster")) from None
    for k in ("layout", "stack"):
        if data.get(k) is not None and not isinstance(data[k], dict):
            raise UserError(f"{p}: {k}: expected a mapping of fields, got {short(data[k])}")
    try:
        layout = Layout(**data["layout"])
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, f"{p}: layout")) from None
    try:
        stack = StackSpec(**(data.get("stack") or {}))
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, f"{p}: stack")) from None
    try:
        catalog.stack_constants(stack.framework)   # unknown framework: UserError naming the nearest
    except UserError as e:
        raise UserError(f"{p}: stack: {e}") from None
    probs = layout_problems(model, cluster, layout)
    if probs:
        raise UserError(f"{p}: layout: {probs[0]}")
    return Plan(model=model, model_name=data["model"], cluster=cluster, layout=layout, stack=stack)
