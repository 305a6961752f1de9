"""The runtime's model matches the planner's ModelSpec: parameter counts, shapes, causality, scaling."""

from __future__ import annotations

import pytest

from megacluster import catalog
from megacluster.errors import UserError
from megacluster.runtime.config import TINY
from megacluster.runtime.model_spec import scale_model
from megacluster.specs import ModelSpec, MoESpec

torch = pytest.importorskip("torch")
from megacluster.runtime.model import Transformer, count_params  # noqa: E402


def _spec_params(s: ModelSpec) -> int:
    return s.params_total


@pytest.mark.parametrize("spec", [
    TINY,
    TINY.model_copy(update={"tied_embeddings": True, "name": "tied"}),
    TINY.model_copy(update={"mlp": "gelu", "name": "gelu"}),
    TINY.model_copy(update={"name": "moe", "moe": MoESpec(n_experts=4, top_k=2, expert_ffn_hidden=32,
                                                          n_shared_experts=1, n_dense_layers=1)}),
    scale_model(catalog.model("llama3.2-1b"), layers=2, d_model=128, heads=8, vocab=256),
    scale_model(catalog.model("mixtral-8x7b"), layers=2, d_model=64, heads=4, vocab=256, experts=4),
])
def test_parameter_count_matches_spec(spec):
    """Every matrix the planner counts is in the model, and nothing else (norm weights aside)."""
    assert count_params(Transformer(spec, 16)) == _spec_params(spec)


def test_forward_shapes_and_causality():
    torch.manual_seed(0)
    m = Transformer(TINY, 32)
    m.init_weights(0)
    x = torch.randint(0, 256, (2, 32))
    y = m(x)
    assert y.shape == (2, 32, 256)
    x2 = x.clone()
    x2[:, 20:] = (x2[:, 20:] + 1) % 256
    y2 = m(x2)
    assert torch.allclose(y[:, :20], y2[:, :20], atol=1e-6)  # earlier positions never see later tokens
    assert not torch.allclose(y[:, 20:], y2[:, 20:])


def test_init_is_deterministic():
    a, b = Transformer(TINY, 8), Transformer(TINY, 8)
    a.init_weights(3)
    b.init_weights(3)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_moe_routes_and_balances():
    spec = TINY.model_copy(update={"moe": MoESpec(n_experts=4, top_k=2, expert_ffn_hidden=32)})
    m = Transformer(spec, 16)
    m.init_weights(0)
    out = m(torch.randint(0, 256, (2, 16)))
    aux = m.aux_loss()
    assert out.shape == (2, 16, 256) and float(aux.detach()) > 0.9  # 1.0 when perfectly balanced
    (out.mean() + aux).backward()
    assert m.layers["0"].feed_forward.router.weight.grad is not None


def test_scale_model_keeps_architecture():
    base = catalog.model("llama3.1-8b")
    s = scale_model(base, layers=2, d_model=256, heads=8, vocab=256)
    assert (s.n_layers, s.d_model, s.n_heads, s.vocab) == (2, 256, 8, 256)
    assert s.n_heads // s.kv_heads == base.n_heads // base.kv_heads  # GQA group kept
    assert s.ffn_hidden == 896  # 14336 * 256/4096
    assert s.mlp == base.mlp and s.hd == 32
    assert scale_model(base) is base
    with pytest.raises(UserError, match="kv"):
        scale_model(base, heads=8, kv_heads=3)
