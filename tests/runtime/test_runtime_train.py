"""Training in one process: the loss falls, recompute/compile/bf16/MoE paths run, metrics are written."""

from __future__ import annotations

import json
import math

import pytest

from runtime_helpers import losses, tiny_config

torch = pytest.importorskip("torch")
from megacluster.runtime.train import lr_at, run  # noqa: E402


def test_loss_falls_well_below_ln_vocab(tmp_path):
    """300 steps of the tiny model (0.13M parameters) on CPython's text: from ln(256) = 5.55 nats to < 2.6."""
    cfg = tiny_config(tmp_path, steps=300, lr=3e-3, warmup=20, micro_batch=8, global_batch=8, seq_len=128)
    res = run(cfg)
    curve = losses(tmp_path / "metrics.jsonl")
    assert abs(curve[1] - math.log(256)) < 0.1
    tail = sum(curve[s] for s in range(281, 301)) / 20
    assert tail < 0.47 * math.log(256), tail
    m = res["measured"]
    assert m["steps"] == 300 and m["tokens_per_s"] > 0 and 0 < m["mfu"] < 1.5
    assert "measured fp32 matmul on this CPU" in m["peak_source"] or "measured" in m["peak_source"]


def test_metrics_jsonl_records(tmp_path):
    run(tiny_config(tmp_path, steps=3))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[-1]["event"] == "end"
    assert lines[0]["prediction"] is None and "prediction skipped" in lines[0]["prediction_note"]
    step = lines[1]
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "tflops_per_device", "mfu", "memory_gib",
                "step_time_s"):
        assert key in step
    assert [x["step"] for x in lines[1:-1]] == [1, 2, 3]


@pytest.mark.parametrize("kw", [{"recompute": "full"}, {"recompute": "selective"},
                                {"compile": True, "compile_backend": "aot_eager"}])
def test_recompute_and_compile_give_the_same_losses(tmp_path, kw):
    ref = run(tiny_config(tmp_path / "ref", steps=3))
    other = run(tiny_config(tmp_path / "other", steps=3, **kw))
    a, b = losses(tmp_path / "ref" / "metrics.jsonl"), losses(tmp_path / "other" / "metrics.jsonl")
    assert ref["measured"]["steps"] == other["measured"]["steps"] == 3
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-5)


def test_bf16_and_moe_train(tmp_path):
    from megacluster.runtime.config import TINY
    from megacluster.specs import MoESpec

    spec = TINY.model_copy(update={"moe": MoESpec(n_experts=4, top_k=2, expert_ffn_hidden=64)})
    run(tiny_config(tmp_path, steps=30, model=spec, precision="bf16", lr=3e-3))
    curve = losses(tmp_path / "metrics.jsonl")
    assert curve[30] < curve[1] - 1.0


def test_prediction_for_a_named_gpu(tmp_path):
    res = run(tiny_config(tmp_path, steps=2, precision="bf16", gpu="h100-sxm"))
    assert res["prediction"]["gpu"] == "h100-sxm" and res["prediction"]["n_gpus"] == 1
    assert res["prediction_note"].startswith("megacluster's prediction for 1 x h100-sxm")
    assert "measured" in res["measured"]["peak_source"]  # on CPU the MFU is against the CPU's own matmul


def test_lr_schedule():
    cfg = tiny_config(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1) and lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 60) == pytest.approx(0.55) and lr_at(cfg, 110) == pytest.approx(0.1)


def test_selective_recompute_reruns_every_other_matmul():
    """The runtime's "selective" is the policy the step model assumes for the torchtitan stack: of a block's
    matmuls, the 1st, 3rd, ... are kept and the others rerun in backward."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.checkpoint import checkpoint

    from megacluster.runtime.parallel import _selective_context

    class CountMM(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
                self.n += 1
            return func(*args, **(kwargs or {}))

    ws = [torch.randn(8, 8, requires_grad=True) for _ in range(4)]

    def block(x):
        for w in ws:
            x = torch.tanh(x @ w)
        return x

    def backward_matmuls(mode):
        x = torch.randn(4, 8, requires_grad=True)
        if mode == "none":
            y = block(x)
        elif mode == "full":
            y = checkpoint(block, x, use_reentrant=False)
        else:
            y = checkpoint(block, x, use_reentrant=False, context_fn=_selective_context)
        with CountMM() as c:
            y.sum().backward()
        return c.n

    plain = backward_matmuls("none")                                 # 2 gradient matmuls per layer
    assert plain == 8
    assert backward_matmuls("full") == plain + 4                     # every forward matmul again
    assert backward_matmuls("selective") == plain + 2                # the 2nd and the 4th
