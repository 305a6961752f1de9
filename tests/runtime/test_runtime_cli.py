"""``megacluster train`` from the command line: the torch-less path and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megacluster.cli import main

from runtime_helpers import env


def test_cli_imports_and_explains_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import megacluster.runtime.cli\n"
            "from megacluster.cli import main\n"
            "main(['train', '--steps', '1'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["error: megacluster train needs PyTorch: pip install "
                                             "'megacluster[train]'"]


def _error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as e:
        main(["train", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.parametrize("args, expect", [
    (["--pp", "2", "--tp", "2"], "pipeline with tensor parallelism (pp=2, tp=2) is not implemented in the runtime; "
                                 "supported: dp (FSDP2) x tp (DTensor, with or without sequence parallelism), "
                                 "or pp (1F1B) x dp"),
    (["--pp", "2", "--global-batch", "2", "--micro-batch", "2"], "1F1B with pp=2 needs at least 2 micro-batches"),
    (["--pp", "3", "--global-batch", "6", "--micro-batch", "2"], "pp=3 needs at least 3 layers"),
    (["--pp", "2", "--global-batch", "4", "--micro-batch", "2"], "needs tp*pp*dp = 1*2*1 = 2 processes but 1"),
    (["--cp", "2"], "needs tp*pp*dp*cp = 1*1*1*2 = 2 processes but 1"),
    (["--ep", "2"], "ep=2 but tiny-llama is a dense model"),
    (["--cp", "2", "--seq-len", "66"], "seq_len 66 is not a multiple of 4"),
    (["--ep", "3", "--experts", "4"], "ep=3 does not divide the 4 experts"),
    (["--tp", "2"], "the layout needs tp*pp*dp = 2*1*1 = 2 processes but 1 were launched"),
    (["--precision", "fp4"], "precision fp4: the runtime trains in bf16, fp16, fp32 or fp8"),
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
    assert res["config"]["model"]["name"] == "Llama 3.1 8B (scaled)" and res["config"]["model"]["n_layers"] == 1
    assert res["config"]["layout"]["global_batch"] == 2 and res["measured"]["steps"] == 1

