"""The runtime prices the pipeline schedule it ran: DeepSeek's two-copy DualPipe runs as DualPipeV."""

from __future__ import annotations

import pytest

from megacluster import catalog
from megacluster.runtime.pipeline import SCHEDULES
from megacluster.specs import Layout, StackSpec

pytest.importorskip("torch")


def _cfg(schedule: str, stack: StackSpec | None):
    from megacluster.runtime.config import TrainConfig

    lay = Layout(pp=4, vp=2, dp=2, micro_batch=1, global_batch=16, seq_len=4096, zero=1, recompute="full")
    return TrainConfig(model=catalog.model("llama3.1-8b"), layout=lay, precision="bf16", schedule=schedule,
                       stack=stack)


@pytest.mark.parametrize("stack", [None, StackSpec(framework="hai-llm")])
def test_dualpipe_is_priced_as_the_dualpipe_v_that_ran(stack):
    from megacluster.estimate import estimate
    from megacluster.cluster import make_cluster
    from megacluster.runtime.train import predict

    assert SCHEDULES["dualpipe"].prices == SCHEDULES["dualpipe-v"].prices == "dualpipe-v"
    est, note = predict(_cfg("dualpipe", stack), "h100-sxm", 8)
    assert est is not None, note
    base = stack or StackSpec(framework="torchtitan")
    want = estimate(catalog.model("llama3.1-8b"), make_cluster("h100-sxm", 8, None),
                    _cfg("dualpipe", stack).layout.model_copy(update={"precision": "bf16"}),
                    base.model_copy(update={"schedule": "dualpipe-v"}))
    assert est.step_time_s == pytest.approx(want.step_time_s)
    two_copies = estimate(catalog.model("llama3.1-8b"), make_cluster("h100-sxm", 8, None),
                          _cfg("dualpipe", stack).layout.model_copy(update={"precision": "bf16"}),
                          base.model_copy(update={"schedule": "dualpipe"}))
    assert two_copies.memory_gib_per_gpu > est.memory_gib_per_gpu


def test_an_unpriced_schedule_says_so():
    from megacluster.runtime.train import predict

    est, note = predict(_cfg("zero-bubble", None), "h100-sxm", 8)
    assert est is None and "does not price the zero-bubble" in note
