"""fp8 training (fp8.py): the recipe comes from the flag or the plan, a CPU run says in one line that it trains
in bf16, and (on a GPU with fp8) torchao's Float8Linear layers train."""

from __future__ import annotations

import json

import pytest

from megacluster.cli import main
from megacluster.errors import UserError

torch = pytest.importorskip("torch")
from megacluster.runtime import fp8  # noqa: E402
from megacluster.runtime.cli import build_config  # noqa: E402

PLAN = ("model: llama3.1-8b\ngpu: h100-sxm\ngpus: 1\nlayout: {global_batch: 2, seq_len: 32, micro_batch: 2, "
        "precision: fp8, recompute: none}\nstack: {framework: torchtitan, fp8_recipe: %s}\n")


def _config(plan=None, **kw):
    args = {k: None for k in ("model", "layers", "d_model", "heads", "kv_heads", "ffn", "vocab", "experts",
                              "top_k", "tp", "dp", "pp", "cp", "ep", "micro_batch", "global_batch", "seq_len",
                              "sequence_parallel", "recompute", "zero", "precision", "gpu", "gpus", "fabric")}
    args.update(world=1, cuda=False, plan=plan)
    args.update(kw)
    return build_config(**args)


def test_recipe_from_flag_plan_or_default(tmp_path):
    assert _config(precision="fp8").fp8_recipe == "tensorwise"
    assert _config(precision="fp8", fp8_recipe="rowwise").fp8_recipe == "rowwise"
    assert _config(precision="bf16").fp8_recipe is None
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN % "rowwise")
    cfg = _config(plan=plan)  # an fp8 plan on CPU is an fp8 config (resolved to bf16 when the run starts)
    assert (cfg.precision, cfg.fp8_recipe) == ("fp8", "rowwise")
    assert _config(plan=plan, fp8_recipe="tensorwise").fp8_recipe == "tensorwise"  # the flag wins
    plan.write_text(PLAN % "mxfp8")
    with pytest.raises(UserError, match="fp8 recipe 'mxfp8' is not one the runtime runs"):
        _config(plan=plan)
    with pytest.raises(UserError, match="--fp8-recipe rowwise applies to fp8 training"):
        _config(precision="bf16", fp8_recipe="rowwise")


def test_resolve_keeps_fp8_only_where_it_runs(monkeypatch):
    cfg = _config(precision="fp8", fp8_recipe="rowwise")
    out, line = fp8.resolve(cfg, torch.device("cpu"))
    assert out.precision == "bf16" and out.fp8_recipe is None
    assert line == "fp8 plan: this device (cpu) has no fp8 matmuls; training in bf16 instead"
    monkeypatch.setattr(fp8, "fp8_unavailable", lambda device: None)  # as on an H100
    out, line = fp8.resolve(cfg, torch.device("cpu"))
    assert (out.precision, out.fp8_recipe) == ("fp8", "rowwise") and "torchao float8, rowwise" in line
    assert fp8.resolve(_config(precision="bf16"), torch.device("cpu"))[1] is None


def test_cpu_fp8_run_says_bf16_in_one_line(capsys):
    main(["train", "--device", "cpu", "--precision", "fp8", "--steps", "1", "--global-batch", "2",
          "--micro-batch", "2", "--seq-len", "32", "--json"])
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["layout"]["precision"] == "bf16" and res["steps"] == 1
    notes = [ln for ln in cap.err.splitlines() if "fp8" in ln]
    assert notes == ["fp8 plan: this device (cpu) has no fp8 matmuls; training in bf16 instead"]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < fp8.MIN_CAPABILITY,
                    reason="needs a CUDA GPU with fp8 (compute capability 8.9+)")
@pytest.mark.parametrize("recipe", fp8.RECIPES)
def test_float8_linear_trains_on_gpu(recipe):
    from torchao.float8.float8_linear import Float8Linear

    from megacluster.runtime.config import TINY
    from megacluster.runtime.model import Transformer

    spec = TINY.model_copy(update={"d_model": 128, "ffn_hidden": 256})
    m = Transformer(spec, 64).cuda()
    m.init_weights(0)
    n = fp8.apply(m, recipe)
    assert n == sum(isinstance(x, Float8Linear) for x in m.modules()) == 2 * 7  # q k v o w1 w2 w3 per layer
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    x = torch.randint(0, 256, (4, 65), device="cuda")  # 4 x 64 tokens: fp8 matmul dims are multiples of 16
    losses = []
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(m(x[:, :-1]).flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss))
    assert losses[-1] < losses[0]
