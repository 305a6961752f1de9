"""Build a :class:`ClusterSpec` from catalog names and a few overrides."""

from __future__ import annotations

from . import catalog
from .errors import UserError
from .limits import check_number
from .specs import ClusterSpec, GPUSpec, NodeSpec

# default scale-out fabric and NIC line rate by GPU generation (what DGX/HGX systems of that generation ship)
_DEFAULT_FABRIC = {"volta": ("infiniband-hdr", 100.0), "ampere": ("infiniband-hdr", 200.0),
                   "hopper": ("infiniband", 400.0),
                   "blackwell": ("infiniband", 400.0), "cdna3": ("roce", 400.0)}


def make_cluster(gpu: str | GPUSpec, n_gpus: int, fabric: str | None = None, nic_gbps: float | None = None,
                 nics_per_node: int | None = None, gpus_per_node: int | None = None,
                 nvlink_domain: int | None = None) -> ClusterSpec:
    """A cluster of ``n_gpus`` accelerators, 8 per node with one NIC each unless told otherwise. The NVLink
    domain is the node unless told otherwise or the part ships in a larger one (GB200 NVL72: 72 GPUs over
    18 trays of 4)."""
    g = catalog.gpu(gpu) if isinstance(gpu, str) else gpu
    if n_gpus is None:
        raise UserError("--gpus must be a positive number of GPUs, got None")
    check_number("--gpus", n_gpus, integer=True)
    for flag, val in (("--nic-gbps", nic_gbps), ("--nics-per-node", nics_per_node),
                      ("--gpus-per-node", gpus_per_node)):
        check_number(flag, val, integer=flag != "--nic-gbps")
    fab_default, nic_default = _DEFAULT_FABRIC.get(g.generation, ("infiniband", 400.0))
    gpn = gpus_per_node or 8
    for name, val in (("nic-gbps", nic_gbps), ("nics-per-node", nics_per_node), ("gpus-per-node", gpus_per_node)):
        if val is not None and val <= 0:
            raise UserError(f"--{name} must be positive, got {val}")
    if nvlink_domain is not None and nvlink_domain <= 0:
        raise UserError(f"nvlink_domain must be a positive number of GPUs, got {nvlink_domain}")
    check_number("nvlink_domain", nvlink_domain, integer=True)
    domain = nvlink_domain or max(gpn, g.nvlink_domain or gpn)
    measured = {k: v for k, v in (("nvlink_efficiency", g.intra_node_efficiency),
                                  ("nvlink_latency_us", g.intra_node_latency_us)) if v is not None}
    node = NodeSpec(gpus_per_node=gpn, nvlink_domain=domain, nics_per_node=nics_per_node or gpn,
                    nic_gbps=nic_gbps or nic_default, **measured)
    fab = catalog.fabric(fabric or fab_default)
    if fabric == "infiniband" and nic_gbps is not None and nic_gbps <= 200:
        fab = catalog.fabric("infiniband-hdr")
    return ClusterSpec(gpu=g, n_gpus=n_gpus, node=node, fabric=fab)
