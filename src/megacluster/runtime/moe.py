"""Mixture-of-experts layer of the runtime model, and expert parallelism.

:class:`MoE`: a softmax router picks the top-k experts of each token (their weights renormalised over the k);
the token copies are sorted by expert and each expert runs once on its contiguous run of tokens
(:class:`GroupedExperts`: ``torch._grouped_mm`` where the device, dtype and shapes allow it, else one matmul per
expert over its own tokens only), then the outputs are scattered back, weighted, and shared experts added.

Expert parallelism (``ep`` > 1, as torchtitan does it): the experts of every MoE layer are split over the ``ep``
ranks of an expert group (rank ``r`` owns experts ``r*E/ep .. (r+1)*E/ep - 1``; the weights are DTensors sharded
on dim 0). Each rank routes its own tokens, then one ``all_to_all_single`` with split sizes sends every token copy
to the rank owning its expert, the rank computes its experts on what it received, and a second all-to-all
returns the outputs (both differentiable: backward runs the reverse exchanges). The expert groups are cut from
the data x context-parallel ranks (``dp_shard_cp``, ``ep`` must divide ``dp*cp``); non-expert weights are sharded
by FSDP over all ``dp*cp`` ranks and the experts by FSDP over the ``dp*cp/ep`` ranks that hold the same experts,
their gradients divided by ``dp*cp`` (each expert's gradient already sums the token copies of its whole group).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class _Stacked(nn.Module):
    """One weight per expert, stacked: ``weight`` is (n_experts, out, in), each expert's laid out as
    ``nn.Linear``'s (so that names end in ``w1.weight``... as the dense FFN's do)."""

    def __init__(self, n: int, out: int, inp: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out, inp))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s default initialisation for each expert (``Transformer.init_weights`` replaces it)."""
        bound = 1 / self.weight.shape[-1] ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)


def _local(w: torch.Tensor) -> torch.Tensor:
    """This rank's experts of a weight (the local shard of an expert-parallel DTensor)."""
    from torch.distributed.tensor import DTensor

    return w.to_local() if isinstance(w, DTensor) else w


def _grouped_ok(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``torch._grouped_mm`` runs these operands: CPU fp32/bf16, or CUDA bf16 on compute capability >= 9,
    with every row a multiple of 16 bytes."""
    if not hasattr(torch, "_grouped_mm") or x.shape[0] == 0 or x.dtype != w.dtype:
        return False
    if x.device.type == "cpu":
        ok = x.dtype in (torch.float32, torch.bfloat16)
    elif x.device.type == "cuda":
        ok = x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device)[0] >= 9
    else:
        ok = False
    align = 16 // x.element_size()
    return ok and x.shape[1] % align == 0 and w.shape[1] % align == 0


def grouped_linear(x: torch.Tensor, w: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """``x`` (N, in), rows sorted by expert, ``counts[e]`` rows for expert ``e``; ``w`` (E, out, in).
    Returns (N, out): each row times its expert's weight transposed."""
    if _grouped_ok(x, w):
        offs = counts.cumsum(0).to(torch.int32)
        return torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)
    outs, start = [], 0
    for e, n in enumerate(counts.tolist()):
        outs.append(x[start:start + n] @ w[e].t())
        start += n
    return torch.cat(outs) if outs else x.new_zeros(0, w.shape[1])


class GroupedExperts(nn.Module):
    """The routed experts of one layer, stacked: ``w2(act(w1 x) * w3 x)`` (SwiGLU) or ``w2(act(w1 x))``."""

    def __init__(self, n_experts: int, dim: int, hidden: int, kind: str):
        super().__init__()
        from .model import _ACT

        self.act = _ACT[kind]
        self.w1 = _Stacked(n_experts, hidden, dim)
        self.w2 = _Stacked(n_experts, dim, hidden)
        self.w3 = _Stacked(n_experts, hidden, dim) if kind == "swiglu" else None

    def weights(self) -> list[_Stacked]:
        return [m for m in (self.w1, self.w2, self.w3) if m is not None]

    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``x`` sorted by (local) expert, ``counts`` rows per local expert."""
        h = self.act(grouped_linear(x, _local(self.w1.weight), counts))
        if self.w3 is not None:
            h = h * grouped_linear(x, _local(self.w3.weight), counts)
        return grouped_linear(h, _local(self.w2.weight), counts)


class MoE(nn.Module):
    """Top-k routed experts (softmax router, weights renormalised over the chosen k) plus shared experts.

    ``aux_loss`` after a forward holds the Switch-Transformer load-balancing loss of that call
    (n_experts * sum_e fraction_routed_e * mean_prob_e; 1.0 when perfectly balanced). Under context
    parallelism (``aux_group`` set) the fractions and mean probabilities are averaged over the ranks that hold
    parts of the same sequences, so the loss is that of the whole micro-batch.
    """

    def __init__(self, spec):
        super().__init__()
        from .model import FeedForward

        m = spec.moe
        self.top_k = m.top_k
        self.n_experts = m.n_experts
        self.router = nn.Linear(spec.d_model, m.n_experts, bias=False)
        self.experts = GroupedExperts(m.n_experts, spec.d_model, m.expert_ffn_hidden, spec.mlp)
        width = m.shared_ffn_hidden or m.expert_ffn_hidden
        self.shared = nn.ModuleList(FeedForward(spec.d_model, width, spec.mlp) for _ in range(m.n_shared_experts))
        self.aux_loss = torch.zeros(())
        self.ep_group = None   # process group of the expert-parallel ranks (apply_ep)
        self.aux_group = None  # process group of the context-parallel ranks (ContextParallel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = self.router(x).float().softmax(-1)
        weights, chosen = probs.topk(self.top_k, dim=-1)
        weights = (weights / weights.sum(-1, keepdim=True)).type_as(x)
        flat = chosen.flatten()
        order = flat.argsort(stable=True)           # token copies sorted by expert
        token = order // self.top_k
        counts = torch.bincount(flat, minlength=self.n_experts)
        xs = x[token]
        ys = self._dispatch(xs, counts) if self.ep_group is not None else self.experts(xs, counts)
        out = torch.zeros_like(x).index_add(0, token, ys * weights.flatten()[order, None])
        for s in self.shared:
            out = out + s(x)
        self.aux_loss = self._aux(counts, probs)
        return out.reshape(shape)

    def _aux(self, counts: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        frac = counts.float() / (probs.shape[0] * self.top_k)
        mean_p = probs.mean(0)
        if self.aux_group is not None:
            # value: the means over the whole sequences; gradient: through this rank's tokens only, which the
            # dp x cp gradient average then turns into the gradient of the whole micro-batch's loss
            n = dist.get_world_size(self.aux_group)
            both = torch.cat([frac, mean_p.detach()])
            dist.all_reduce(both, group=self.aux_group)
            frac = both[:self.n_experts] / n
            mean_p = both[self.n_experts:] / n + (mean_p - mean_p.detach())
        return self.n_experts * (frac * mean_p).sum()

    def _dispatch(self, xs: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Expert parallelism: send each token copy to the rank owning its expert, run the local experts,
        send the outputs back. ``xs`` sorted by expert, ``counts`` (E,) copies per expert from this rank."""
        from torch.distributed._functional_collectives import all_to_all_single_autograd

        group = self.ep_group
        P = dist.get_world_size(group)
        E_l = self.n_experts // P
        recv = torch.empty_like(counts)
        dist.all_to_all_single(recv, counts, group=group)   # recv[p*E_l + j]: copies rank p sends to my expert j
        recv = recv.view(P, E_l)
        send_splits = counts.view(P, E_l).sum(1).tolist()
        recv_splits = recv.sum(1).tolist()
        xr = all_to_all_single_autograd(xs, recv_splits, send_splits, group)
        perm = _by_expert(recv)                             # (source rank, expert) order -> (expert, source rank)
        yg = self.experts(xr[perm], recv.sum(0))
        yr = yg[torch.argsort(perm)]
        return all_to_all_single_autograd(yr, send_splits, recv_splits, group)


def _by_expert(c: torch.Tensor) -> torch.Tensor:
    """Indices that reorder rows laid out in segments (p, j) (row-major over ``c`` (P, E_l) counts) into the
    order (j, p): all rows of local expert 0 from every source rank first, then expert 1..."""
    flat = c.flatten()
    starts = (flat.cumsum(0) - flat).view(c.shape).t().flatten()
    sizes = c.t().flatten()
    total = int(sizes.sum())
    seg_start_new = sizes.cumsum(0) - sizes
    pos = torch.arange(total, device=c.device)
    return torch.repeat_interleave(starts, sizes, output_size=total) + pos - torch.repeat_interleave(
        seg_start_new, sizes, output_size=total)


def check_layout(layout, spec) -> None:
    """Refuse, with one line, an expert-parallel layout the runtime cannot run."""
    ep = layout.ep
    if ep <= 1:
        return
    if not spec.moe:
        raise UserError(f"ep={ep} but {spec.name} is a dense model (no experts to shard); use --ep 1 "
                        "or add experts with --experts N")
    if spec.moe.n_experts % ep:
        raise UserError(f"ep={ep} does not divide the {spec.moe.n_experts} experts per layer; pick an ep that "
                        "divides them")
    if (layout.dp * layout.cp) % ep:
        raise UserError(f"ep={ep} must divide dp*cp = {layout.dp}*{layout.cp} = {layout.dp * layout.cp} (expert "
                        "groups are cut from the data- and context-parallel ranks)")


def expert_meshes(mesh, layout):
    """``(efsdp, ep)``: the mesh of the ranks that hold the same experts (FSDP over them) and the 1-D mesh of one
    expert group, cut from ``dp_shard_cp`` (ep ranks innermost). With HSDP (``dp_replicate`` > 1) ``efsdp`` is
    2-D, ``(ep_replicate, efsdp_shard)``: the expert groups lie inside the non-expert weights' shard groups
    (``ep`` divides ``dp*cp/dp_replicate``) and the experts are replicated over the same replicas. Made once
    per mesh."""
    cached = getattr(mesh, "_megacluster_ep_meshes", None)
    if cached is None:
        from .context_parallel import fsdp_mesh

        flat = fsdp_mesh(mesh)
        n, rep = layout.dp * layout.cp, layout.dp_replicate
        if rep > 1:
            three = flat._unflatten(0, (rep, n // (rep * layout.ep), layout.ep),
                                    ("ep_replicate", "efsdp_shard", "ep"))
            cached = (three["ep_replicate", "efsdp_shard"], three["ep"])
        else:
            two = flat._unflatten(0, (n // layout.ep, layout.ep), ("efsdp", "ep"))
            cached = (two["efsdp"], two["ep"])
        mesh._megacluster_ep_meshes = cached
    return cached


def moe_layers(model: nn.Module) -> list[MoE]:
    return [m for m in model.modules() if isinstance(m, MoE)]


def apply_ep(model: nn.Module, mesh, layout) -> None:
    """Shard every MoE layer's experts over the ``ep`` ranks (DTensor ``Shard(0)``: this rank keeps its
    ``E/ep`` experts) and turn on all-to-all dispatch. The model's full weights are on every rank (same seed),
    so each keeps its slice without communication."""
    from torch.distributed.tensor import Shard, distribute_tensor

    _, ep_mesh = expert_meshes(mesh, layout)
    for moe in moe_layers(model):
        for w in moe.experts.weights():
            w.weight = nn.Parameter(distribute_tensor(w.weight.data, ep_mesh, [Shard(0)], src_data_rank=None))
        moe.ep_group = ep_mesh.get_group()


def apply_expert_fsdp(model: nn.Module, mesh, layout, precision: str) -> None:
    """With ``ep`` > 1: FSDP for the experts over the ranks holding the same experts (``dp*cp/ep`` of them),
    gradients divided by ``dp*cp`` (as the other weights' are). Called before the blocks are wrapped."""
    if layout.ep <= 1:
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from .parallel import precision_dtype

    efsdp, _ = expert_meshes(mesh, layout)
    _sac_ignores_profiler_markers()
    mp = MixedPrecisionPolicy(param_dtype=precision_dtype(precision), reduce_dtype=torch.float32)
    for moe in moe_layers(model):
        fully_shard(moe.experts, mesh=efsdp, mp_policy=mp, reshard_after_forward=layout.zero >= 3)
        moe.experts.set_gradient_divide_factor(float(layout.dp * layout.cp))
        if efsdp.device_type == "cpu" and efsdp.size(efsdp.ndim - 1) > 1:  # gloo has no pre-multiplied sum: sum,
            # then divide (not when the shard dimension is one rank: PyTorch 2.13's FSDP would then divide twice;
            # with HSDP it then sums over the replicas, which gloo runs)
            moe.experts.set_force_sum_reduction_for_comms(True)


def _sac_ignores_profiler_markers() -> None:
    """Let selective activation checkpointing skip the profiler's record-function markers. The experts' own FSDP
    unit, nested in a checkpointed block, opens one more ``record_function`` range when the block is recomputed
    in backward than in forward, and PyTorch's SAC (2.13) then stops on the op count ("invocation index ...
    not found in storage"). The markers compute nothing, so running them without caching changes no result."""
    from torch.utils import checkpoint

    prof = torch.ops.profiler
    checkpoint.SAC_IGNORED_OPS |= {prof._record_function_enter_new.default, prof._record_function_exit.default,
                                   prof._record_function_exit._RecordFunction}
