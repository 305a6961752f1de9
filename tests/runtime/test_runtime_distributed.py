"""Two processes on gloo (torchrun): FSDP2, tensor parallelism and a 1F1B pipeline reproduce the one-process
losses, and a checkpoint written by one layout resumes exactly under another (DCP resharding)."""

from __future__ import annotations

import pytest

from runtime_helpers import TINY, cli, losses

pytest.importorskip("torch")

#: relative tolerance on the loss, FSDP/TP/PP (2 ranks) vs one process, fp32: only the order of floating-point
#: reductions differs (measured: 0 to 1e-7)
RTOL = 1e-5
STEPS = ["--steps", "6"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    r = cli([*TINY, *STEPS, "--metrics", str(d / "m.jsonl")])
    assert r.returncode == 0, r.stderr
    return losses(d / "m.jsonl")


def _close(got: dict, want: dict, first: int = 1) -> None:
    assert sorted(got) == list(range(first, 7))
    for s, v in got.items():
        assert v == pytest.approx(want[s], rel=RTOL), (s, v, want[s])


def test_fsdp_two_ranks_then_tp_resumes_its_checkpoint(tmp_path, reference):
    r = cli([*TINY, *STEPS, "--dp", "2", "--metrics", str(tmp_path / "fsdp.jsonl"),
             "--checkpoint-dir", str(tmp_path / "ck"), "--checkpoint-every", "3"], nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dp 2 x tp 1" in r.stdout
    _close(losses(tmp_path / "fsdp.jsonl"), reference)
    # tensor parallel (sequence parallel) resumes the FSDP checkpoint of step 3 and continues the same curve
    r = cli([*TINY, *STEPS, "--tp", "2", "--metrics", str(tmp_path / "tp.jsonl"),
             "--resume", str(tmp_path / "ck" / "step_00000003")], nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dp 1 x tp 2 (sequence parallel)" in r.stdout and "resumed from" in r.stdout
    _close(losses(tmp_path / "tp.jsonl"), reference, first=4)


def test_tp_two_ranks_without_sequence_parallel(tmp_path, reference):
    r = cli([*TINY, *STEPS, "--tp", "2", "--no-sequence-parallel", "--recompute", "selective",
             "--metrics", str(tmp_path / "tp.jsonl")], nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    _close(losses(tmp_path / "tp.jsonl"), reference)


def test_pipeline_two_stages(tmp_path, reference):
    r = cli([*TINY, *STEPS, "--pp", "2", "--metrics", str(tmp_path / "pp.jsonl")], nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "x pp 2 (1F1B, 4 micro-batches)" in r.stdout
    _close(losses(tmp_path / "pp.jsonl"), reference)
