"""The global batch as a choice bounded by DeepSeek LLM's batch-size law (issue 19)."""

from __future__ import annotations

import pytest

from megacluster import catalog
from megacluster.campaign.batch import batch_bound, optimal_batch_tokens
from megacluster.campaign.campaign import run_campaign
from megacluster.cluster import make_cluster
from megacluster.errors import UserError


def test_law_values():
    # B_opt = 0.2920 C^0.3271: at 1e20 FLOP about 1.0M tokens, and it grows 2.13x per 10x compute
    assert optimal_batch_tokens(1e20) == pytest.approx(0.2920 * 1e20 ** 0.3271)
    assert optimal_batch_tokens(1e21) / optimal_batch_tokens(1e20) == pytest.approx(10 ** 0.3271)
    b = batch_bound(3.8e25, 8192)
    assert b.high_sequences == int(0.2920 * 3.8e25 ** 0.3271 // 8192)
    assert b.low_sequences == -(-b.high_sequences // 2) and b.extrapolated
    assert "B_opt = 0.292 C^0.3271" in b.text() and "2401.02954" in b.text()
    assert not batch_bound(1e19, 2048).extrapolated
    with pytest.raises(UserError):
        optimal_batch_tokens(0)


def test_campaign_picks_its_batch_within_the_law_and_says_so():
    m = catalog.model("llama3.1-8b")
    r = run_campaign(m, 1e12, make_cluster("h100-sxm", 256), reliability=False)
    b = batch_bound(r.training_flops, m.seq_len)
    assert b.low_sequences <= r.layout["global_batch"] <= b.high_sequences
    assert "global_batch_bound" in r.assumptions
    assert any("DeepSeek LLM" in n and "chosen by the search" in n for n in r.notes)
    # a given global batch is kept, and no bound is claimed
    r2 = run_campaign(m, 1e12, make_cluster("h100-sxm", 256), global_batch=512, reliability=False)
    assert r2.layout["global_batch"] == 512 and "global_batch_bound" not in r2.assumptions


def test_colossus_explains_its_days_miss():
    from megacluster.campaign.scenarios import run_scenario

    r = run_scenario("xai-colossus-100k", trials=20)
    d = r.published["days"]
    misses = [n for n in r.notes if n.startswith("miss: days")]
    assert d["within"] or (len(misses) == 1 and "gap is" in misses[0] and "goodput" in misses[0])
