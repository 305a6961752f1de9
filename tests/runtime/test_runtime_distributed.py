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
    assert "x pp 2 (1f1b: Schedule1F1B, 4 micro-batches)" in r.stdout
    _close(losses(tmp_path / "pp.jsonl"), reference)


#: four layers, so that two pipeline ranks hold two stages each
FOUR = ["--layers", "4"]


@pytest.fixture(scope="module")
def reference4(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref4")
    r = cli([*TINY, *STEPS, *FOUR, "--metrics", str(d / "m.jsonl")])
    assert r.returncode == 0, r.stderr
    return losses(d / "m.jsonl")


def test_zero_bubble_pipeline(tmp_path, reference4):
    """ZB-V: two stages per rank placed in a V, weight gradients apart from input gradients (interleaved 1F1B
    is in the 4-process test below)."""
    r = cli([*TINY, *STEPS, *FOUR, "--pp", "2", "--vp", "2", "--schedule", "zero-bubble", "--recompute", "full",
             "--metrics", str(tmp_path / "m.jsonl")], nproc=2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "zero-bubble: ScheduleZBVZeroBubble, 2 stages per rank" in r.stdout
    _close(losses(tmp_path / "m.jsonl"), reference4)


def test_four_processes_pp_x_tp(tmp_path, reference):
    """PP2 x TP2 (sequence parallel) on one 3-D mesh: 4 processes, the one-process losses."""
    r = cli([*TINY, *STEPS, "--pp", "2", "--tp", "2", "--metrics", str(tmp_path / "m.jsonl")], nproc=4)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dp 1 x tp 2 (sequence parallel) x pp 2" in r.stdout
    _close(losses(tmp_path / "m.jsonl"), reference)


def test_four_processes_pp_x_fsdp_interleaved(tmp_path, reference4):
    """PP2 (interleaved, 2 stages per rank) x DP2 with FSDP2 inside each stage."""
    r = cli([*TINY, *STEPS, *FOUR, "--pp", "2", "--vp", "2", "--dp", "2", "--metrics", str(tmp_path / "m.jsonl")],
            nproc=4)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dp 2 x tp 1 x pp 2 (1f1b: ScheduleInterleaved1F1B, 2 stages per rank" in r.stdout
    _close(losses(tmp_path / "m.jsonl"), reference4)


def test_layout_error_is_printed_once_under_torchrun(tmp_path):
    """Every rank finds the same bad layout; rank 0 alone prints it and every worker exits 2 (no traceback
    from the workers)."""
    r = cli([*TINY, "--tp", "3"], nproc=2)
    assert r.returncode != 0
    said = [x for x in r.stderr.splitlines() if x.startswith("error: ")]
    assert said == ["error: the layout needs tp*pp*dp = 3*1*1 = 3 processes but 2 were launched "
                    "(torchrun --nproc_per_node 3 ...)"], r.stderr
    assert "exitcode  : 2" in r.stderr, r.stderr[-2000:]           # torchrun's summary of the failed workers
    assert "megacluster/" not in r.stderr                          # no traceback through megacluster's code
