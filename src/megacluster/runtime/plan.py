"""Reading a plan file for the runtime (no torch here).

A plan is YAML with keys ``model``, ``gpu``, ``gpus``, ``fabric``, ``layout`` (the fields of
:class:`~megacluster.specs.Layout`) and ``stack`` (fields of :class:`~megacluster.specs.StackSpec`).
:func:`megacluster.plan_file.load_plan` is used when it is installed; otherwise the same keys are read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ..errors import UserError
from ..specs import ModelSpec, StackSpec


@dataclass
class RunPlan:
    """What the runtime takes from a plan: the model, the hardware it was planned for, the layout fields."""

    model: ModelSpec
    gpu: str | None = None
    gpus: int | None = None
    fabric: str | None = None
    layout: dict = field(default_factory=dict)
    stack: StackSpec | None = None


def _from_core(obj) -> RunPlan:
    """Adapt what ``plan_file.load_plan`` returns (an object with attributes or a dict) to a RunPlan."""
    get = (lambda k: obj.get(k)) if isinstance(obj, dict) else (lambda k: getattr(obj, k, None))
    model = get("model")
    cluster = get("cluster")
    gpu = get("gpu") or (cluster.gpu if cluster is not None else None)
    gpus = get("gpus") or get("n_gpus") or (cluster.n_gpus if cluster is not None else None)
    fabric = get("fabric") or (cluster.fabric if cluster is not None else None)
    layout = get("layout")
    return RunPlan(model=model if isinstance(model, ModelSpec) else _model(model),
                   gpu=getattr(gpu, "id", gpu), gpus=gpus, fabric=getattr(fabric, "id", fabric),
                   layout=layout.model_dump() if hasattr(layout, "model_dump") else dict(layout or {}),
                   stack=get("stack") if isinstance(get("stack"), StackSpec) else _stack(get("stack")))


def _model(value) -> ModelSpec:
    from .. import catalog

    if isinstance(value, str):
        return catalog.model(value)
    if isinstance(value, dict):
        try:
            return ModelSpec(**{"name": "plan model", **value})
        except ValidationError as e:
            raise UserError(catalog.validation_message(e, "plan model")) from None
    raise UserError("plan: `model` must be a catalog name, a config path or a mapping of ModelSpec fields")


def _stack(value) -> StackSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        return StackSpec(framework=value)
    try:
        return StackSpec(**value)
    except (ValidationError, TypeError) as e:
        raise UserError(f"plan: bad `stack`: {e}".splitlines()[0]) from None


def read_plan(path: str | Path) -> RunPlan:
    """The plan in ``path`` (through ``megacluster.plan_file.load_plan`` when available)."""
    try:
        from ..plan_file import load_plan
    except ImportError:
        load_plan = None
    if load_plan is not None:
        return _from_core(load_plan(path))
    from ..catalog import read_yaml_or_json

    data = read_yaml_or_json(path)
    if not isinstance(data, dict) or "model" not in data:
        raise UserError(f"{path}: a plan needs at least `model` (and usually gpu, gpus, fabric, layout, stack)")
    unknown = set(data) - {"model", "gpu", "gpus", "fabric", "layout", "stack"}
    if unknown:
        raise UserError(f"{path}: unknown plan key(s) {', '.join(sorted(unknown))} "
                        "(known: model, gpu, gpus, fabric, layout, stack)")
    layout = data.get("layout") or {}
    if not isinstance(layout, dict):
        raise UserError(f"{path}: `layout` must be a mapping of Layout fields (tp, dp, pp, ...)")
    return RunPlan(model=_model(data["model"]), gpu=data.get("gpu"), gpus=data.get("gpus"),
                   fabric=data.get("fabric"), layout=layout, stack=_stack(data.get("stack")))
