"""A Llama-architecture decoder built from a :class:`~megacluster.specs.ModelSpec`.

RMSNorm, rotary position embeddings, grouped-query attention (PyTorch SDPA, causal), a gated (SwiGLU) or plain
FFN, and optional mixture-of-experts layers with top-k routing and shared experts (moe.py). Module names follow the
torchtitan convention (``attention.wq``, ``feed_forward.w1`` ...) so that tensor-parallel plans address them.

Shapes inside: ``B`` batch, ``T`` sequence length, ``D`` model width, ``H`` heads, ``K`` kv heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..specs import ModelSpec
from .model_spec import scale_model  # noqa: F401 (re-exported)
from .moe import MoE  # routed experts, grouped and expert-parallel (moe.py)

#: activations of the plain (non-gated) FFN kinds
_ACT = {"gelu": F.gelu, "relu": F.relu, "squared-relu": lambda x: F.relu(x).square(), "swiglu": F.silu}


def check_supported(spec: ModelSpec) -> None:
    """Raise :class:`UserError` for model features the runtime does not build."""
    if spec.mla is not None:
        raise UserError(f"model {spec.name} uses multi-head latent attention (MLA), which the runtime does not "
                        "build; supported: multi-head and grouped-query attention")


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(head_dim: int, seq_len: int, theta: float = 500000.0) -> torch.Tensor:
    """Rotary tables, shape (T, head_dim/2, 2): cos and sin of position x frequency."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float64), freqs)
    return torch.stack([ang.cos(), ang.sin()], dim=-1).float()


def apply_rope(x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of channels of ``x`` (B, T, H, hd) by the angles in ``rope`` (T, hd/2, 2)."""
    B, T, H, hd = x.shape
    xr = x.float().reshape(B, T, H, hd // 2, 2)
    cos = rope[:T, None, :, 0]
    sin = rope[:T, None, :, 1]
    a, b = xr[..., 0], xr[..., 1]
    out = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return out.reshape(B, T, H, hd).type_as(x)


class Attention(nn.Module):
    """Grouped-query causal self-attention. Head counts are read from the (possibly tensor-parallel) weights."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        D, hd = spec.d_model, spec.hd
        self.head_dim = hd
        self.n_rep = spec.n_heads // spec.kv_heads
        self.wq = nn.Linear(D, spec.n_heads * hd, bias=False)
        self.wk = nn.Linear(D, spec.kv_heads * hd, bias=False)
        self.wv = nn.Linear(D, spec.kv_heads * hd, bias=False)
        self.wo = nn.Linear(spec.n_heads * hd, D, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, -1, self.head_dim)
        k = self.wk(x).view(B, T, -1, self.head_dim)
        v = self.wv(x).view(B, T, -1, self.head_dim)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        if self.n_rep > 1:
            k = k.repeat_interleave(self.n_rep, dim=2)
            v = v.repeat_interleave(self.n_rep, dim=2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """FFN: ``w2(act(w1 x) * w3 x)`` when gated (SwiGLU), else ``w2(act(w1 x))``."""

    def __init__(self, dim: int, hidden: int, kind: str):
        super().__init__()
        self.act = _ACT[kind]
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False) if kind == "swiglu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.w1(x))
        if self.w3 is not None:
            h = h * self.w3(x)
        return self.w2(h)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm x), then + ffn(norm x)."""

    def __init__(self, spec: ModelSpec, moe: bool):
        super().__init__()
        self.attention_norm = RMSNorm(spec.d_model)
        self.attention = Attention(spec)
        self.ffn_norm = RMSNorm(spec.d_model)
        self.feed_forward = MoE(spec) if moe else FeedForward(spec.d_model, spec.ffn_hidden, spec.mlp)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), rope)
        return x + self.feed_forward(self.ffn_norm(x))


def is_moe_layer(spec: ModelSpec, i: int) -> bool:
    """Whether layer ``i`` has routed experts (after the dense layers, every ``moe_layer_freq``-th)."""
    m = spec.moe
    return bool(m) and i >= m.n_dense_layers and (i - m.n_dense_layers) % m.moe_layer_freq == 0


class Transformer(nn.Module):
    """Token embedding, ``n_layers`` blocks, final norm, output projection (tied to the embedding if the
    spec says so). ``forward(tokens (B, T)) -> logits (B, T, vocab)``."""

    def __init__(self, spec: ModelSpec, max_seq_len: int):
        super().__init__()
        check_supported(spec)
        self.spec = spec
        self.tok_embeddings = nn.Embedding(spec.vocab, spec.d_model)
        self.layers = nn.ModuleDict({str(i): Block(spec, is_moe_layer(spec, i)) for i in range(spec.n_layers)})
        self.norm = RMSNorm(spec.d_model)
        self.output = nn.Linear(spec.d_model, spec.vocab, bias=False)
        if spec.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.register_buffer("rope", rope_tables(spec.hd, max_seq_len), persistent=False)

    def init_weights(self, seed: int) -> None:
        """Deterministic init from ``seed``: normal(0.02) for matrices, output projections of each block
        scaled by 1/sqrt(2 * n_layers) (GPT-2), norms to one; the rotary tables recomputed.

        Each matrix is drawn from generators seeded by ``seed``, its name in the whole model and a block of
        rows (:func:`fill_normal`), so the values do not depend on the layout: a pipeline stage, an FSDP or
        tensor-parallel shard (a DTensor) fills only its own part and gets what the one-process model holds
        there. Works after ``to_empty`` on a model built on the meta device."""
        depth_std = 0.02 / math.sqrt(2 * self.spec.n_layers)
        with torch.no_grad():
            self.rope.copy_(rope_tables(self.spec.hd, self.rope.shape[0]).to(self.rope.device))
            for name, p in self.named_parameters():
                name = canonical_name(name)
                if p.dim() == 1:
                    p.fill_(1.0)
                    continue
                std = depth_std if name.endswith(("wo.weight", "w2.weight")) else 0.02
                fill_normal(p, name, seed, std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits; a pipeline stage without the embedding takes hidden states, one without the output
        projection returns them."""
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        for layer in self.layers.values():
            h = layer(h, self.rope)
        if self.norm is not None:
            h = self.norm(h)
        return self.output(h) if self.output is not None else h

    def keep_stage(self, stage: int, n_stages: int) -> None:
        """Turn this model into pipeline stage ``stage`` of ``n_stages``: keep a contiguous run of layers (the
        first stages one more when they do not divide evenly), the embedding on the first stage, the final norm
        and output projection on the last. Layer names stay those of the whole model (for checkpoints)."""
        n = self.spec.n_layers
        sizes = [n // n_stages + (1 if s < n % n_stages else 0) for s in range(n_stages)]
        first = sum(sizes[:stage])
        for i in range(n):
            if not first <= i < first + sizes[stage]:
                del self.layers[str(i)]
        if stage > 0:
            self.tok_embeddings = None
        if stage < n_stages - 1:
            self.norm = None
            self.output = None

    def aux_loss(self) -> torch.Tensor | float:
        """Sum of the MoE load-balancing losses of the last forward (0 for a dense model)."""
        total: torch.Tensor | float = 0.0
        for layer in self.layers.values():
            if isinstance(layer.feed_forward, MoE):
                total = total + layer.feed_forward.aux_loss
        return total


#: wrapper prefixes in parameter names (activation checkpointing, torch.compile)
_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.")


def canonical_name(name: str) -> str:
    """A parameter's name in the plain model (wrappers' prefixes removed)."""
    for w in _WRAPPERS:
        name = name.replace(w, "")
    return name


def _seed_of(seed: int, name: str, block: int) -> int:
    """A 63-bit generator seed from the run's seed, a parameter name and a row block (stable across runs)."""
    import hashlib

    h = hashlib.blake2b(f"{seed}:{name}:{block}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & (2 ** 63 - 1)


def _rows_per_block(cols: int) -> int:
    return max(1, 65536 // max(1, cols))


def _normal_rows(shape: tuple, name: str, seed: int, std: float, r0: int, r1: int) -> torch.Tensor:
    """Rows ``r0:r1`` of the full (rows, cols) matrix ``name``: N(0, std) drawn in blocks of rows, each block
    from its own generator, so that any row range is the same slice of the whole."""
    cols = shape[1]
    rb = _rows_per_block(cols)
    out = []
    for b in range(r0 // rb, (r1 - 1) // rb + 1 if r1 > r0 else r0 // rb):
        g = torch.Generator().manual_seed(_seed_of(seed, name, b))
        lo, hi = b * rb, min(shape[0], (b + 1) * rb)
        block = torch.randn((hi - lo, cols), generator=g)
        out.append(block[max(r0, lo) - lo:min(r1, hi) - lo])
    return torch.cat(out) * std if out else torch.empty((0, cols))


def fill_normal(p: torch.Tensor, name: str, seed: int, std: float) -> None:
    """Fill weight ``p`` (a plain tensor or this rank's shard of a DTensor) with its part of the layout-free
    N(0, std) init of :func:`_normal_rows`. A weight of more than two dimensions (the MoE layer's stacked
    experts, (experts, out, in)) is drawn as the matrix (experts x out, in). A shard that is a block of rows
    and columns (Shard/Replicate placements on the first and last dimensions) draws only its rows; any other
    sharding draws the whole weight and keeps its own part."""
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

    shape = tuple(p.shape)
    inner = math.prod(shape[1:-1])                  # rows of the matrix per index of the first dimension
    matrix = (shape[0] * inner, shape[-1])
    if not isinstance(p, DTensor):
        p.copy_(_normal_rows(matrix, name, seed, std, 0, matrix[0]).view(shape).to(p.device, p.dtype))
        return
    local = p.to_local()
    if all(type(pl) in (Shard, Replicate) for pl in p.placements):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        lshape, off = compute_local_shape_and_global_offset(shape, p.device_mesh, p.placements)
        if 0 in tuple(lshape):
            return
        if tuple(lshape[1:-1]) == shape[1:-1]:
            rows = _normal_rows(matrix, name, seed, std, off[0] * inner, (off[0] + lshape[0]) * inner)
            local.copy_(rows[:, off[-1]:off[-1] + lshape[-1]].reshape(tuple(lshape)).to(local.device, local.dtype))
            return
    full = _normal_rows(matrix, name, seed, std, 0, matrix[0]).view(shape).to(local.device, local.dtype)
    local.copy_(distribute_tensor(full, p.device_mesh, p.placements, src_data_rank=None).to_local())


def count_params(model: nn.Module) -> int:
    """Parameters of a (not yet sharded) model, tied weights counted once, norm weights excluded."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen or p.dim() == 1:
            continue
        seen.add(id(p))
        n += p.numel()
    return n
