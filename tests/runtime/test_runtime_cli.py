"""``megacluster train`` from the command line: the torch-less path and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megacluster.cli import main

from runtime_helpers import env
from runtime_helpers import train_error as _error


def test_cli_imports_and_explains_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import megacluster.runtime.cli\n"
            "from megacluster.cli import main\n"
            "main(['train', '--steps', '1'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: megacluster train needs PyTorch: pip install "
                                             "'megacluster[train]'"]


@pytest.mark.parametrize("args, expect", [
    (["--pp", "2", "--global-batch", "2", "--micro-batch", "2"],
     "the 1f1b schedule with pp=2 needs at least 2 micro-batches per step, this layout gives 1"),
    (["--pp", "2", "--vp", "2", "--global-batch", "4", "--micro-batch", "2"],
     "pp*vp = 2*2 = 4 pipeline stages is more than the model's 2 layers; pass --vp 1"),
    (["--vp", "2"], "vp=2 stages per pipeline rank need pipeline parallelism; pass --pp 2 or more"),
    (["--pp", "2", "--schedule", "zero-bubble", "--layers", "4", "--global-batch", "4", "--micro-batch", "2"],
     "the zero-bubble schedule runs 2 stages per pipeline rank; pass --vp 2"),
    (["--pp", "2", "--vp", "2", "--schedule", "dualpipe", "--layers", "4", "--global-batch", "8",
      "--micro-batch", "2", "--recompute", "selective"], "selective recompute does not run under the dualpipe"),
    (["--schedule", "gpipe"], "pipeline schedule 'gpipe' is not in the runtime (it runs 1f1b, dualpipe, dualpipe-v, zero-bubble, zb-h1)"),
    (["--tp", "0"], "--tp must be positive, got 0"),
    (["--pp", "0"], "--pp must be positive, got 0"),
    (["--dp", "-1"], "--dp must be positive, got -1"),
    (["--layers", "0"], "--layers must be positive, got 0"),
    (["--d-model", "0"], "--d-model must be positive, got 0"),
    (["--heads", "0"], "--heads must be positive, got 0"),
    (["--experts", "0"], "--experts must be positive, got 0"),
    (["--gpus", "0"], "--gpus must be positive, got 0"),
    (["--gpu", "bogus"], "unknown GPU 'bogus'"),
    (["--fabric", "bogus"], "unknown fabric 'bogus'"),
    (["--experts", "4", "--top-k", "8"], "--top-k 8 is more than the 4 experts"),
    (["--clip", "-1"], "--clip must be zero or more, got -1.0"),
    (["--weight-decay", "-1"], "--weight-decay must be zero or more, got -1.0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--zero", "4"], "--zero must be 0, 1, 2 or 3"),
    (["--precision", "fp4"], "--precision fp4: use one of bf16, fp16, fp32, fp8"),
    (["--pp", "3", "--global-batch", "6", "--micro-batch", "2"], "pp=3 needs at least 3 layers"),
    (["--pp", "2", "--global-batch", "4", "--micro-batch", "2"], "needs tp*pp*dp = 1*2*1 = 2 processes but 1"),
    (["--cp", "2"], "needs tp*pp*dp*cp = 1*1*1*2 = 2 processes but 1"),
    (["--ep", "2"], "ep=2 but tiny-llama is a dense model"),
    (["--cp", "2", "--seq-len", "66"], "seq_len 66 is not a multiple of 4"),
    (["--ep", "3", "--experts", "4"], "ep=3 does not divide the 4 experts"),
    (["--tp", "2"], "the layout needs tp*pp*dp = 2*1*1 = 2 processes but 1 were launched"),
    (["--precision", "fp8", "--fp8-recipe", "delayed"], "fp8 recipe 'delayed' is not one the runtime runs"),
    (["--recompute", "sometimes"], "layout: recompute"),
    (["--data", "/no/such/file.txt"], "data not found: /no/such/file.txt"),
    (["--resume", "/no/such/ckpt"], "no such checkpoint directory"),
    (["--resume", "auto"], "--resume auto needs --checkpoint-dir"),
    (["--vocab", "100"], "the byte tokenizer has 256 tokens but the model's vocabulary is 100"),
    (["--model", "llama9-1t"], "unknown model 'llama9-1t'"),
    (["--model", "deepseek-v3", "--layers", "2", "--d-model", "64", "--vocab", "256"],
     "multi-head latent attention"),
    (["--steps", "0"], "--steps must be positive"),
    (["--global-batch", "5", "--micro-batch", "2"], "global batch 5 is not a multiple of dp*micro_batch"),
    (["--tokenizer", "words"], "unknown tokenizer 'words'"),
    (["--top-k", "2"], "--top-k needs --experts"),
])
def test_bad_input_is_one_line(capsys, args, expect):
    pytest.importorskip("torch")
    base = ["--device", "cpu"] + ([] if "--steps" in args else ["--steps", "1"])
    err = _error(capsys, *base, *args)
    assert expect in err


def test_bad_jsonl(tmp_path, capsys):
    pytest.importorskip("torch")
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "hello"}\n{"body": "no text"}\n')
    assert "line 2 has no 'text' field" in _error(capsys, "--steps", "1", "--data", str(f))
    f.write_text('{"text": "hello"}\nnot json\n')
    assert "line 2 is not valid JSON" in _error(capsys, "--steps", "1", "--data", str(f))


def test_too_little_data(tmp_path, capsys):
    pytest.importorskip("torch")
    f = tmp_path / "d.txt"
    f.write_text("short")
    assert "fewer than one sequence" in _error(capsys, "--steps", "1", "--data", str(f), "--seq-len", "64")


def test_plan_file(tmp_path, capsys):
    """A plan from the planner is read (model, layout); its 8-GPU layout is refused on one process; flags
    override it."""
    pytest.importorskip("torch")
    plan = tmp_path / "plan.yaml"
    plan.write_text("model: llama3.1-8b\ngpu: h100-sxm\ngpus: 8\nlayout: {tp: 1, pp: 2, dp: 4, global_batch: 8, "
                    "seq_len: 128, recompute: none, zero: 3}\n")
    assert "needs tp*pp*dp = 1*2*4 = 8 processes but 1 were launched" in _error(capsys, "--plan", str(plan),
                                                                                "--steps", "1")
    main(["train", "--plan", str(plan), "--pp", "1", "--dp", "1", "--global-batch", "2", "--micro-batch", "2",
              "--seq-len", "32", "--layers", "1", "--d-model", "64", "--heads", "4", "--vocab", "256",
              "--steps", "1", "--json"])
    out = capsys.readouterr().out
    import json

    res = json.loads(out)
    assert res["model"]["name"] == "Llama 3.1 8B (scaled)" and res["model"]["n_layers"] == 1
    assert res["layout"]["global_batch"] == 2 and res["steps"] == 1

