"""Context parallelism: the sequence of every micro-batch split over the ``cp`` ranks, attention by ring.

This is PyTorch's own context-parallel implementation (``torch.distributed.tensor.experimental.context_parallel``,
the one torchtitan uses): while it is active, ``F.scaled_dot_product_attention`` receives this rank's shard of the
queries, keys and values and runs ring attention over the ``cp`` process group (key/value shards passed around
the ring, partial outputs merged by their log-sum-exp), and the sequence is cut with PyTorch's head-tail load
balancer (rank ``r`` of ``n`` holds chunks ``r`` and ``2n-1-r`` of ``2n``), so that causal attention costs every
rank the same. The rotary table is cut the same way, so each token keeps its position.

PyTorch routes the CUDA attention kernels (flash, memory-efficient, cuDNN) to its ring. On CPU, SDPA runs
``aten._scaled_dot_product_flash_attention_for_cpu``, which PyTorch 2.13 leaves out of that routing (it raises
"does not have a sharding strategy registered"); :func:`register_cpu_ring_attention` adds that kernel and its
backward to the same dispatcher and runs them through PyTorch's own ring (``_templated_ring_attention`` and its
backward), so that CPU tests run the code path a GPU runs, with the CPU kernel in place of flash attention.

Everything here leans on private names of ``torch.distributed.tensor.experimental._context_parallel`` (the API is
experimental); :func:`check_available` says in one line when the installed PyTorch lacks them.

The device mesh: ``(pp, dp, cp, tp)``, with ``dp`` and ``cp`` flattened into ``dp_shard_cp``, the group FSDP
shards over (as torchtitan does: cp ranks hold the same weights, and their gradients are averaged with the dp
ranks' since each holds a different part of the tokens). With HSDP (``dp_replicate`` > 1) that group is cut into
``(dp_replicate, hsdp_shard)`` for FSDP (:func:`fsdp_mesh`); ``dp`` (which rank reads which batch) stays whole.
"""

from __future__ import annotations

import torch

from ..errors import UserError

_SEQ_DIM = 2  # of the (B, H, T, hd) tensors SDPA takes
_registered = False


def check_available() -> None:
    """Raise :class:`UserError` when this PyTorch has no context-parallel SDPA (added in PyTorch 2.7)."""
    try:
        from torch.distributed.tensor.experimental._context_parallel import _attention  # noqa: F401
        from torch.distributed.tensor.experimental._context_parallel._attention import (  # noqa: F401
            _context_parallel_buffers, _templated_ring_attention, _templated_ring_attention_backward, context_parallel)
        from torch.distributed.tensor.experimental._context_parallel._load_balancer import (  # noqa: F401
            _create_default_load_balancer)
    except ImportError as e:
        raise UserError(f"context parallelism needs PyTorch's context-parallel attention (PyTorch >= 2.7); this "
                        f"PyTorch {torch.__version__} lacks it ({e}); use --cp 1") from None


def make_mesh(d, layout):
    """The 4-D ``(pp, dp, cp, tp)`` device mesh of the job with ``dp`` x ``cp`` flattened to ``dp_shard_cp``
    (sets and returns ``d.mesh``). ``mesh["pp"]``, ``mesh["dp"]`` and ``mesh["tp"]`` are those of the 3-D mesh."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(d.device.type, (layout.pp, layout.dp, layout.cp, layout.tp),
                            mesh_dim_names=("pp", "dp", "cp", "tp"))
    mesh._megacluster_dp_shard_cp = mesh["dp", "cp"]._flatten("dp_shard_cp")  # kept: PyTorch asks us to
    d.mesh = mesh
    return mesh


def fsdp_mesh(mesh, dp_replicate: int = 1):
    """The mesh FSDP shards over: ``dp_shard_cp`` (dp x cp ranks) on a mesh from :func:`make_mesh`, else ``dp``.

    With ``dp_replicate`` > 1 (HSDP, ``Layout.dp_replicate``): the 2-D ``(dp_replicate, hsdp_shard)`` mesh cut from
    ``dp_shard_cp``, replicas outer, so that each shard group is ``dp*cp/dp_replicate`` neighbouring ranks (the
    outer dp index splits into replica x shard, cp stays inside the shard group); ``fully_shard`` on a 2-D mesh
    shards over the inner dimension and all-reduces the gradient shards over the outer one. Made once per mesh."""
    flat = getattr(mesh, "_megacluster_dp_shard_cp", None)
    flat = flat if flat is not None else mesh["dp"]
    if dp_replicate <= 1:
        return flat
    cached = getattr(mesh, "_megacluster_hsdp", None)
    if cached is None:
        n = flat.size()
        cached = flat._unflatten(0, (dp_replicate, n // dp_replicate), ("dp_replicate", "hsdp_shard"))
        mesh._megacluster_hsdp = cached
    return cached


def register_cpu_ring_attention() -> None:
    """Route the CPU SDPA kernel (and its backward) to PyTorch's ring attention while context parallelism is on.

    Adds handlers to the table (``_attention.custom_ops``) that PyTorch installs in DTensor's dispatcher when
    ``context_parallel`` starts; each unwraps the sequence-sharded DTensors, runs PyTorch's templated ring
    (forward: out and log-sum-exp merged in fp32; backward: dK/dV passed back around the ring) with the CPU kernel,
    and wraps the results as sequence-sharded DTensors again. Idempotent."""
    global _registered
    if _registered:
        return
    from torch.distributed.tensor.experimental._context_parallel import _attention as A

    aten = torch.ops.aten
    A.custom_ops[aten._scaled_dot_product_flash_attention_for_cpu.default] = _cpu_forward
    A.custom_ops[aten._scaled_dot_product_flash_attention_for_cpu_backward.default] = _cpu_backward
    _registered = True


def _wrap(local: torch.Tensor, mesh):
    """A DTensor sharded along the sequence (dim 2) of ``mesh`` from this rank's shard ``local``."""
    from torch.distributed.tensor import DTensor, Shard
    from torch.distributed.tensor._dtensor_spec import DTensorSpec, TensorMeta

    shape = list(local.shape)
    shape[_SEQ_DIM] *= mesh.size()
    spec = DTensorSpec(mesh, (Shard(_SEQ_DIM),), tensor_meta=TensorMeta(torch.Size(shape), local.stride(),
                                                                       local.dtype))
    return DTensor(local, spec, requires_grad=False)


def _local(t):
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def _cpu_forward(op_call, args, kwargs):
    """``_scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p=0, is_causal=False, *, attn_mask=None,
    scale=None) -> (out, logsumexp)`` on sequence-sharded DTensors, by PyTorch's ring."""
    from torch.distributed.tensor.experimental._context_parallel._attention import _templated_ring_attention

    names = ("query", "key", "value", "dropout_p", "is_causal")
    a = {"dropout_p": 0.0, "is_causal": False, **dict(zip(names, args)), **kwargs}
    if a.get("attn_mask") is not None:
        raise NotImplementedError("context-parallel attention takes no attention mask (causal only)")
    mesh = a["query"].device_mesh
    out, lse = _templated_ring_attention(
        mesh.get_group(), _SEQ_DIM, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
        _local(a["query"]), _local(a["key"]), _local(a["value"]), is_causal=a["is_causal"],
        dropout_p=a["dropout_p"], scale=a.get("scale"))
    return _wrap(out, mesh), _wrap(lse, mesh)


def _cpu_backward(op_call, args, kwargs):
    """``_scaled_dot_product_flash_attention_for_cpu_backward(grad_out, q, k, v, out, logsumexp, dropout_p,
    is_causal, *, attn_mask=None, scale=None) -> (dq, dk, dv)`` by PyTorch's ring."""
    from torch.distributed.tensor.experimental._context_parallel._attention import _templated_ring_attention_backward

    names = ("grad_out", "query", "key", "value", "out", "logsumexp", "dropout_p", "is_causal")
    a = {**dict(zip(names, args)), **kwargs}
    mesh = a["query"].device_mesh
    grads = _templated_ring_attention_backward(
        mesh.get_group(), _SEQ_DIM, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default,
        grad_out=_local(a["grad_out"]), grad_out_name="grad_out", query=_local(a["query"]), key=_local(a["key"]),
        value=_local(a["value"]), out=_local(a["out"]), logsumexp=_local(a["logsumexp"]),
        is_causal=a["is_causal"], dropout_p=a["dropout_p"], scale=a.get("scale"))
    return tuple(_wrap(g, mesh) for g in grads[:3])


class ContextParallel:
    """Context parallelism for one run: :meth:`shard` cuts each micro-batch's tokens and targets, and SDPA runs
    as ring attention until :meth:`close`.

    On creation the model's rotary table (``model.rope``, sequence on dim 0) is cut the same way for the whole
    run, and ``F.scaled_dot_product_attention`` is patched (PyTorch's ``context_parallel`` context, entered here
    and left in :meth:`close`). ``seq_len`` must be a multiple of ``2 * cp`` (head-tail load balancing).
    """

    def __init__(self, model, cp_mesh, seq_len: int):
        from contextlib import ExitStack

        from torch.distributed.tensor.experimental._context_parallel._attention import context_parallel
        from torch.distributed.tensor.experimental._context_parallel._load_balancer import (
            _create_default_load_balancer)

        check_available()
        if cp_mesh.device_type == "cpu":
            register_cpu_ring_attention()
        self.mesh = cp_mesh
        self.seq_len = seq_len
        self._stack = ExitStack()
        # enters PyTorch's context: cuts the rope table in place (with the default load balancer, which it turns
        # on) and routes SDPA to the ring
        self._stack.enter_context(context_parallel(cp_mesh, buffers=[model.rope], buffer_seq_dims=[0]))
        self.load_balancer = _create_default_load_balancer(seq_len, cp_mesh.size(), model.rope.device)

    def shard(self, *batches: torch.Tensor) -> list[torch.Tensor]:
        """This rank's part of each (B, T) tensor (tokens, targets), cut as the rotary table was."""
        from torch.distributed.tensor.experimental._context_parallel._attention import _context_parallel_buffers

        return _context_parallel_buffers(self.mesh, list(batches), [1] * len(batches), self.load_balancer)

    def close(self) -> None:
        """Restore SDPA and the full rotary table."""
        self._stack.close()


def check_layout(layout, spec) -> None:
    """Refuse, with one line, a context-parallel layout the runtime cannot run."""
    cp = layout.cp
    if cp <= 1:
        return
    if layout.pp > 1:
        raise UserError(f"context parallelism with pipeline stages (cp={cp}, pp={layout.pp}) is not implemented "
                        "in the runtime; use --pp 1 or --cp 1")
    if layout.seq_len % (2 * cp):
        raise UserError(f"context parallelism splits each sequence into 2*cp = {2 * cp} load-balanced chunks: "
                        f"seq_len {layout.seq_len} is not a multiple of {2 * cp}; pass --seq-len "
                        f"{max(2 * cp, layout.seq_len // (2 * cp) * (2 * cp))}")
    if layout.tp > 1 and layout.sequence_parallel and (layout.seq_len // cp) % layout.tp:
        raise UserError(f"sequence parallelism needs each rank's seq_len/cp = {layout.seq_len // cp} divisible "
                        f"by tp={layout.tp}")
