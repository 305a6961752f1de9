"""The step model's prediction of a run of megacluster's own runtime on a calibrated machine (``train
--hardware`` and ``calibrate --from-metrics``): the profile's device for this process's thread count, the
runtime's stack (torchtitan's constants: the runtime is built like it), every process on one node."""

from __future__ import annotations

from typing import Optional

from ..errors import UserError
from ..specs import Layout, ModelSpec, StackSpec


def predict_run(hardware, model: ModelSpec, layout: Layout, precision: str, n_procs: int,
                threads: Optional[int] = None, gpu: Optional[str] = None, compile: bool = False,
                stack: Optional[StackSpec] = None):
    """(StepEstimate or None, a line saying what it is) for ``n_procs`` processes of the runtime."""
    from .. import catalog
    from ..cluster import make_cluster
    from ..estimate import estimate
    from .profile import profile_fabric, use_hardware

    device_id = use_hardware(hardware, gpu, threads)
    g = catalog.gpu(device_id)
    if precision == "fp32" and g.generation != "cpu":
        return None, (f"prediction skipped: the planner models 16-bit training on {g.id}, this run is fp32 "
                      "(pass --precision bf16)")
    # a CPU entry's 16-bit slot holds its fp32 figures (calibrate/measure.py), so fp32 runs there as the slot
    prec = "bf16" if precision == "fp32" else precision
    stack = stack or StackSpec(framework="torchtitan", compile=compile)
    lay = layout.model_copy(update={"precision": prec})
    try:
        cluster = make_cluster(g, n_procs, profile_fabric(hardware), gpus_per_node=max(n_procs, 1))
        est = estimate(model, cluster, lay, stack, check=False)
    except UserError as e:
        return None, f"prediction skipped: {e}"
    return est, (f"megacluster's prediction for {n_procs} x {g.id} from the hardware profile {hardware}, stack "
                 f"{stack.framework}")
