"""HSDP (``Layout.dp_replicate`` > 1) on gloo: FSDP2 on a 2-D (replicate, shard) mesh trains the same curve as
unreplicated training (loss and gradient norm: AdamW would hide a wrongly scaled gradient from the loss), its
shard groups are neighbouring ranks, each rank holds 1/(dp/dp_replicate) of the weights, and its DCP checkpoint
resumes under another replica/shard split; bad replica counts are one line before anything launches."""

from __future__ import annotations

import json
import os

import pytest

from runtime_helpers import TINY, cli, tiny_config
from runtime_helpers import train_error as _error

#: relative tolerance, fp32: only the order of floating-point reductions differs (measured: equal to the
#: printed digits)
RTOL = 1e-5
STEPS = ["--steps", "4"]
#: one sequence per micro-batch: each rank accumulates two micro-batches before HSDP reduces
MB1 = ["--micro-batch", "1"]


def _records(path) -> dict[int, tuple[float, float]]:
    """step -> (loss, gradient norm) from a metrics JSONL file."""
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in recs if "event" not in r}


def _close(got: dict, want: dict, first: int = 1) -> None:
    assert sorted(got) == list(range(first, 5))
    for s, v in got.items():
        assert v == pytest.approx(want[s], rel=RTOL), (s, v, want[s])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """dp_replicate 1: one process, in this process (the same settings as the flags below)."""
    pytest.importorskip("torch")
    from megacluster.runtime.train import run

    d = tmp_path_factory.mktemp("ref")
    run(tiny_config(d, steps=4, micro_batch=1))
    return _records(d / "metrics.jsonl")


def _run(tmp_path, name: str, args: list[str], nproc: int):
    path = tmp_path / f"{name}.jsonl"
    r = cli([*TINY, *STEPS, *MB1, *args, "--metrics", str(path), "--json"], nproc=nproc)
    assert r.returncode == 0, r.stderr[-3000:]
    return _records(path), json.loads(r.stdout), r.stderr


@pytest.fixture(scope="module")
def hsdp(tmp_path_factory):
    """dp=4, dp_replicate=2, zero 3 on 4 gloo processes, a checkpoint at step 2: (records, summary, stderr,
    checkpoint directory)."""
    pytest.importorskip("torch")
    d = tmp_path_factory.mktemp("hsdp")
    got = _run(d, "hsdp", ["--dp", "4", "--dp-replicate", "2", "--zero", "3", "--checkpoint-dir", str(d / "ck"),
                           "--checkpoint-every", "2"], nproc=4)
    return (*got, d / "ck" / "step_00000002")


def test_hsdp_four_ranks_trains_the_unreplicated_curve(hsdp, reference):
    records, summary, err, _ = hsdp
    assert "dp 4 (HSDP: 2 replicas x 2-rank shard groups)" in err
    assert summary["layout"]["dp_replicate"] == 2
    _close(records, reference)
    # replicas outer: shard groups {0, 1} and {2, 3}, gradient shards all-reduced between them
    assert summary["fsdp_ranks"] == [[0, 1], [2, 3]]
    # each rank holds half of the weights (sharded over 2, not 4 as FSDP over dp=4 would, nor 1); fp32
    whole = summary["params"] * 4
    assert summary["param_bytes_per_rank"] == pytest.approx(whole / 2, rel=0.01)


def test_hsdp_checkpoint_resumes_under_another_split(tmp_path, hsdp, reference):
    """The 2 x 2 checkpoint of step 2 loads into dp=2, dp_replicate=2 (two replicas of one-rank shards) on two
    processes and continues the same curve (DCP reshards the model and the AdamW state)."""
    records, summary, err = _run(tmp_path, "resumed", ["--dp", "2", "--dp-replicate", "2", "--resume",
                                                       str(hsdp[3])], nproc=2)
    assert "resumed from" in err
    assert summary["fsdp_ranks"] == [[0], [1]]
    _close(records, reference, first=3)


FOUR = pytest.mark.skipif(not os.environ.get("MEGACLUSTER_TEST_4PROC"),
                          reason="4 processes take about a minute each on 2 cores; set MEGACLUSTER_TEST_4PROC=1")
MOE = ["--experts", "4", "--top-k", "2"]


@FOUR
@pytest.mark.parametrize("args, ranks", [
    (["--dp", "4", "--dp-replicate", "1"], [0, 1, 2, 3]),                       # plain FSDP, the same run
    (["--dp", "2", "--cp", "2", "--dp-replicate", "2"], [[0, 1], [2, 3]]),       # cp inside the shard group
    (["--dp", "2", "--tp", "2", "--dp-replicate", "2"], [[0], [2]]),              # rank 0's tp slice
    (["--dp", "2", "--pp", "2", "--dp-replicate", "2"], [[0], [1]]),              # rank 0's pipeline stage
])
def test_hsdp_with_other_degrees(tmp_path, reference, args, ranks):
    records, summary, _ = _run(tmp_path, "m", args, nproc=4)
    assert summary["fsdp_ranks"] == ranks
    _close(records, reference)


@FOUR
def test_hsdp_with_expert_parallelism(tmp_path):
    """dp=4, dp_replicate=2, ep=2: expert groups inside the shard groups, experts replicated over the replicas."""
    from megacluster.runtime.config import TINY as SPEC
    from megacluster.runtime.model_spec import scale_model
    from megacluster.runtime.train import run

    run(tiny_config(tmp_path, steps=4, micro_batch=1, model=scale_model(SPEC, experts=4, top_k=2)))
    want = _records(tmp_path / "metrics.jsonl")
    records, summary, _ = _run(tmp_path, "ep", [*MOE, "--dp", "4", "--dp-replicate", "2", "--ep", "2"], nproc=4)
    _close(records, want)


@pytest.mark.parametrize("args, expect", [
    (["--dp", "4", "--dp-replicate", "3"],
     "error: dp_replicate=3 must divide dp=4 (each replica shards over dp/dp_replicate data ranks)"),
    (["--dp", "4", "--dp-replicate", "2", "--zero", "0"],
     "error: dp_replicate=2 replicates sharded state, but zero 0 shards nothing; use --zero 1, 2 or 3, "
     "or --dp-replicate 1"),
    (["--dp-replicate", "0"], "error: --dp-replicate must be positive, got 0"),
    (["--dp", "4", "--dp-replicate", "2", "--ep", "4", "--experts", "4"],
     "error: ep=4 must divide the shard group dp*cp/dp_replicate = 2; use a smaller --dp-replicate"),
    (["--dp", "4", "--dp-replicate", "2", "--global-batch", "8"],
     "error: the layout needs tp*pp*dp = 1*1*4 = 4 processes but 1 were launched"),
])
def test_train_refuses_bad_replicas_in_one_line(capsys, args, expect):
    pytest.importorskip("torch")
    assert _error(capsys, *TINY, *args).startswith(expect)


def test_a_plans_replicas_follow_the_fitted_dp():
    """A plan's dp_replicate fitted to fewer processes: the largest divisor of the new dp at most the plan's,
    and the fit says so; a flag is kept as given."""
    from megacluster.runtime.config import TINY as SPEC
    from megacluster.runtime.plan import fit_layout

    lay = {"tp": 1, "pp": 1, "dp": 64, "cp": 1, "ep": 1, "vp": 1, "dp_replicate": 4, "micro_batch": 1,
           "global_batch": 64, "seq_len": 64, "zero": 3}
    new, changes = fit_layout(lay, SPEC, 2, set())
    assert (new["dp"], new["dp_replicate"]) == (2, 2)
    assert "dp replicate 4 -> 2" in changes
    new, _ = fit_layout(lay, SPEC, 6, set())
    assert (new["dp"], new["dp_replicate"]) == (6, 3)
    new, changes = fit_layout(lay, SPEC, 2, {"dp_replicate"})
    assert new["dp_replicate"] == 4 and not any(c.startswith("dp replicate") for c in changes)
