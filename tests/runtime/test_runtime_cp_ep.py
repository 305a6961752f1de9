"""Context and expert parallelism on gloo (torchrun): ring attention over cp ranks (with FSDP over dp x cp) and
experts split over ep ranks with all-to-all dispatch (with FSDP) reproduce one process's losses and gradient
norms (fp32). The gradient norm is compared too because AdamW hides a wrongly scaled gradient from the loss."""

from __future__ import annotations

import json
import os

import pytest

from runtime_helpers import TINY, cli, tiny_config

pytest.importorskip("torch")

#: relative tolerance, fp32: only the order of floating-point reductions differs (ring merges, all-to-all)
RTOL = 1e-5
STEPS = ["--steps", "4"]
MOE = ["--experts", "4", "--top-k", "2"]


def losses(path) -> dict[int, tuple[float, float]]:
    """step -> (loss, gradient norm) from a metrics JSONL file."""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in recs if "event" not in r}


def _run(tmp_path, name: str, args: list[str], nproc: int = 1) -> dict:
    path = tmp_path / f"{name}.jsonl"
    r = cli([*TINY, *STEPS, *args, "--metrics", str(path)], nproc=nproc)
    assert r.returncode == 0, r.stderr[-3000:]
    if nproc > 1:
        assert "context/expert parallel" in r.stdout
    if "--resume" in args:
        assert "resumed from" in r.stdout
    return losses(path)


def _reference(tmp_path, **kw) -> dict:
    """One process, in this process (the same settings as the ``TINY`` flags)."""
    from megacluster.runtime.train import run

    run(tiny_config(tmp_path, steps=4, **kw))
    return losses(tmp_path / "metrics.jsonl")


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    return _reference(tmp_path_factory.mktemp("dense"))


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    from megacluster.runtime.config import TINY as SPEC
    from megacluster.runtime.model_spec import scale_model

    return _reference(tmp_path_factory.mktemp("moe"), model=scale_model(SPEC, experts=4, top_k=2))


def _close(got: dict, want: dict, first: int = 1) -> None:
    assert sorted(got) == list(range(first, 5))
    for s, v in got.items():
        assert v == pytest.approx(want[s], rel=RTOL), (s, v, want[s])  # (loss, gradient norm)


def test_context_parallel_two_ranks(tmp_path, dense):
    """cp=2, dp=1: each rank holds half of every sequence (head-tail chunks), attention by PyTorch's ring, and
    the two ranks share FSDP (dp_shard_cp)."""
    _close(_run(tmp_path, "cp", ["--cp", "2"], nproc=2), dense)


@pytest.fixture(scope="module")
def ep_checkpoint(tmp_path_factory):
    """dp=2, ep=2 with a checkpoint at step 2: (losses, checkpoint directory)."""
    d = tmp_path_factory.mktemp("ep")
    got = _run(d, "ep", [*MOE, "--dp", "2", "--ep", "2", "--checkpoint-dir", str(d / "ck"), "--checkpoint-every",
                         "2"], nproc=2)
    return got, d / "ck" / "step_00000002"


def test_expert_parallel_with_fsdp(ep_checkpoint, moe):
    """dp=2, ep=2: two experts per rank, tokens exchanged by all-to-all; the other weights sharded by FSDP."""
    _close(ep_checkpoint[0], moe)


def test_context_and_expert_parallel_resume_the_ep_checkpoint(tmp_path, ep_checkpoint, moe):
    """cp=2 and ep=2 on the same two ranks (ring attention, experts exchanged between the halves of the
    sequences, the load-balancing loss over whole sequences), with selective recompute around the experts' own
    FSDP unit, continue the dp=2 ep=2 run's checkpoint (experts and their optimizer state resharded by DCP) on
    the one-process curve."""
    _close(_run(tmp_path, "cpep", [*MOE, "--cp", "2", "--ep", "2", "--recompute", "selective",
                                   "--resume", str(ep_checkpoint[1])], nproc=2), moe, first=3)


@pytest.mark.skipif(not os.environ.get("MEGACLUSTER_TEST_4PROC"),
                    reason="4 processes take over a minute on 2 cores; set MEGACLUSTER_TEST_4PROC=1")
def test_four_ranks_dp_cp_ep(tmp_path, moe):
    """dp=2 x cp=2 with ep=2: FSDP over 4 ranks, experts FSDP-sharded over the 2 ranks holding the same
    experts (gradients divided by dp*cp)."""
    _close(_run(tmp_path, "dpcpep", [*MOE, "--dp", "2", "--cp", "2", "--ep", "2"], nproc=4), moe)


@pytest.mark.skipif(not os.environ.get("MEGACLUSTER_TEST_4PROC"),
                    reason="4 processes take over a minute on 2 cores; set MEGACLUSTER_TEST_4PROC=1")
def test_four_ranks_cp_tp(tmp_path, dense):
    """cp=2 x tp=2 (sequence parallel): heads split over tp, each head's sequence over cp."""
    _close(_run(tmp_path, "cptp", ["--cp", "2", "--tp", "2"], nproc=4), dense)
