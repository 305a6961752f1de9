"""Reading a plan file for the runtime (no torch here), through :func:`megacluster.plan_file.load_plan`.

The runtime takes the plan's model and layout and the GPU it was planned for (used for the peak and the
prediction when this run is on that GPU); layout flags on the command line override the plan's fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..specs import ModelSpec, StackSpec


@dataclass
class RunPlan:
    """What the runtime takes from a plan."""

    model: ModelSpec
    gpu: str | None = None
    gpus: int | None = None
    fabric: str | None = None
    layout: dict = field(default_factory=dict)
    stack: StackSpec | None = None


def read_plan(path: str | Path) -> RunPlan:
    """The plan in ``path``; malformed plans raise :class:`~megacluster.errors.UserError` (one line)."""
    from ..plan_file import load_plan

    p = load_plan(path)
    return RunPlan(model=p.model, gpu=p.cluster.gpu.id, gpus=p.cluster.n_gpus, fabric=p.cluster.fabric.id,
                   layout=p.layout.model_dump(), stack=p.stack)
