"""The MoE layer (moe.py) in one process: grouped experts equal a per-token reference, the expert-parallel
regrouping permutation, and one-line errors for expert/context-parallel layouts the runtime cannot run."""

from __future__ import annotations

import re

import pytest

from megacluster.errors import UserError
from megacluster.runtime.config import TINY
from megacluster.specs import Layout, MoESpec

torch = pytest.importorskip("torch")
from megacluster.runtime import context_parallel, moe  # noqa: E402
from megacluster.runtime.model import Transformer  # noqa: E402

MOE = TINY.model_copy(update={"name": "moe", "moe": MoESpec(n_experts=4, top_k=2, expert_ffn_hidden=32,
                                                            n_shared_experts=1)})


def _reference(layer: moe.MoE, x: torch.Tensor) -> torch.Tensor:
    """Each token through each of its top-k experts, one at a time (the definition)."""
    probs = layer.router(x).float().softmax(-1)
    w, chosen = probs.topk(layer.top_k, dim=-1)
    w = w / w.sum(-1, keepdim=True)
    ex = layer.experts
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for slot in range(layer.top_k):
            e = int(chosen[t, slot])
            h = layer.experts.act(x[t] @ ex.w1.weight[e].t()) * (x[t] @ ex.w3.weight[e].t())
            out[t] += w[t, slot] * (h @ ex.w2.weight[e].t())
    return out + sum(s(x) for s in layer.shared)


@pytest.mark.parametrize("grouped", [True, False])
def test_grouped_experts_equal_per_token_reference(monkeypatch, grouped):
    if not grouped:
        monkeypatch.setattr(moe, "_grouped_ok", lambda x, w: False)
    torch.manual_seed(0)
    m = Transformer(MOE, 16)
    m.init_weights(0)
    layer = m.layers["0"].feed_forward
    x = torch.randn(24, MOE.d_model)
    got = layer(x)
    assert torch.allclose(got, _reference(layer, x), atol=1e-5)
    # the load-balancing loss: n_experts * sum_e fraction_e * mean prob_e
    probs = layer.router(x).softmax(-1)
    frac = torch.nn.functional.one_hot(probs.topk(2).indices, 4).float().sum(1).mean(0) / 2
    assert float(layer.aux_loss.detach()) == pytest.approx(float(4 * (frac * probs.mean(0)).sum().detach()), rel=1e-6)
    got.sum().backward()
    assert layer.experts.w2.weight.grad.abs().sum() > 0


def test_grouped_linear_with_empty_experts():
    torch.manual_seed(0)
    x, w = torch.randn(6, 8), torch.randn(3, 4, 8)
    counts = torch.tensor([2, 0, 4])
    want = torch.cat([x[:2] @ w[0].t(), x[2:] @ w[2].t()])
    assert torch.allclose(moe.grouped_linear(x, w, counts), want, atol=1e-6)


def test_by_expert_regroups_source_major_rows():
    # 2 source ranks x 3 local experts: counts[p, j]; rows arrive grouped by source rank, then expert
    counts = torch.tensor([[1, 0, 2], [2, 1, 0]])
    labels = [(p, j) for p in range(2) for j in range(3) for _ in range(int(counts[p, j]))]
    perm = moe._by_expert(counts)
    assert [labels[i] for i in perm.tolist()] == sorted(labels, key=lambda pj: (pj[1], pj[0]))


def _layout(**kw):
    return Layout(**{"global_batch": 8, "micro_batch": 2, "seq_len": 64, **kw})


@pytest.mark.parametrize("spec, kw, expect", [
    (TINY, {"ep": 2, "dp": 2}, "tiny-llama is a dense model"),
    (MOE, {"ep": 3, "dp": 3, "global_batch": 6}, "ep=3 does not divide the 4 experts"),
    (MOE, {"ep": 4, "dp": 2}, "ep=4 must divide dp*cp = 2*1 = 2"),
])
def test_expert_parallel_layout_errors(spec, kw, expect):
    with pytest.raises(UserError, match=re.escape(expect)):
        moe.check_layout(_layout(**kw), spec)


@pytest.mark.parametrize("kw, expect", [
    ({"cp": 2, "seq_len": 66}, "seq_len 66 is not a multiple of 4; pass --seq-len 64"),
    ({"cp": 2, "pp": 2}, "context parallelism with pipeline stages"),
    ({"cp": 2, "tp": 8, "seq_len": 8}, "seq_len/cp = 4 divisible by tp=8"),
])
def test_context_parallel_layout_errors(kw, expect):
    with pytest.raises(UserError, match=re.escape(expect)):
        context_parallel.check_layout(_layout(**kw), TINY)
