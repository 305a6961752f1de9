"""What to change when a layout does not fit in GPU memory: each single change is tried with the step model
and the ones that fit are named, with the memory they would need."""

from __future__ import annotations

from ..estimate import estimate
from ..layout_check import layout_problems
from ..specs import ClusterSpec, Layout, ModelSpec, StackSpec


def _alternatives(model: ModelSpec, cluster: ClusterSpec, L: Layout) -> list[tuple[str, Layout]]:
    alts: list[tuple[str, dict]] = []
    if L.zero < 3:
        alts.append(("--zero 3", {"zero": 3}))
    if L.recompute != "full":
        alts.append(("--recompute full", {"recompute": "full"}))
    if L.micro_batch > 1:
        alts.append(("--micro-batch 1", {"micro_batch": 1}))
    if L.dp % 2 == 0:
        if L.tp * 2 <= cluster.node.nvlink_domain:
            alts.append((f"--tp {L.tp * 2}", {"tp": L.tp * 2, "dp": L.dp // 2}))
        alts.append((f"--pp {L.pp * 2}", {"pp": L.pp * 2, "dp": L.dp // 2}))
    if L.seq_len > 2048:          # a config's maximum context is often not the one to train at
        shorter = 8192 if L.seq_len > 8192 else L.seq_len // 2
        alts.append((f"--seq-len {shorter}", {"seq_len": shorter}))
    if L.tp > 1 and not L.sequence_parallel:
        alts.append(("sequence parallelism on", {"sequence_parallel": True}))
    out = []
    for label, change in alts:
        alt = L.model_copy(update=change)
        if not layout_problems(model, cluster, alt):
            out.append((label, alt))
    return out


def does_not_fit_message(model: ModelSpec, cluster: ClusterSpec, layout: Layout, stack: StackSpec, est) -> str:
    """One line: how much memory the layout needs against what the GPU has, and what to change."""
    have = cluster.gpu.hbm_gib
    biggest = max(est.memory_gib.items(), key=lambda kv: kv[1])
    head = (f"layout does not fit: it needs {est.memory_gib_per_gpu:.1f} GiB per GPU but the {cluster.gpu.id} "
            f"has {have:g} GiB ({est.memory_gib_per_gpu - have:.1f} GiB over; largest part {biggest[0]} "
            f"{biggest[1]:.1f} GiB)")
    fitting = []
    for label, alt in _alternatives(model, cluster, layout):
        e = estimate(model, cluster, alt, stack, check=False)
        if e.fits:
            fitting.append(f"{label} ({e.memory_gib_per_gpu:.1f} GiB)")
    if fitting:
        return f"{head}; these fit: {', '.join(fitting)}"
    return (f"{head}; no single change of --tp/--pp, --zero 3, --recompute full, --micro-batch 1 or --seq-len "
            f"is enough: "
            f"combine them, or use more GPUs (`megacluster plan` finds a layout that fits)")
