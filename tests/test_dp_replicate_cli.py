"""``--dp-replicate`` (HSDP / MiCS replicas of the ZeRO-sharded state) where a layout is given by flags, in plan
files, and in the Python API; bad replica counts are one line and exit 2."""

from __future__ import annotations

import json

import pytest
import yaml

from cli_helpers import run_cli
from megacluster import api
from megacluster.cluster import make_cluster
from megacluster.plan_file import load_plan, save_plan
from megacluster.specs import Layout

BASE = ["estimate", "--model", "llama3-8b", "--gpu", "h100-sxm", "--gpus", "64", "--zero", "3"]


def _json(capsys, *args) -> dict:
    code, out, err = run_cli(capsys, *BASE, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_estimate_takes_the_flag(capsys):
    one, four = _json(capsys), _json(capsys, "--dp-replicate", "4")
    assert (one["layout"]["dp_replicate"], four["layout"]["dp_replicate"]) == (1, 4)
    # four replicas shard the ZeRO-3 state over 16 GPUs instead of 64: more of it on each GPU
    assert four["memory_gib_per_gpu"] > one["memory_gib_per_gpu"]


@pytest.mark.parametrize("args, expect", [
    (["--zero", "0", "--dp-replicate", "4"],
     "error: dp_replicate=4 replicates sharded state, but zero 0 shards nothing; use --zero 1, 2 or 3, "
     "or --dp-replicate 1"),
    (["--dp-replicate", "3"],
     "error: dp_replicate=3 must divide dp=64 (each replica shards over dp/dp_replicate data ranks)"),
    (["--dp-replicate", "0"], "error: --dp-replicate must be positive, got 0"),
])
def test_estimate_refuses_bad_replicas_in_one_line(capsys, args, expect):
    code, out, err = run_cli(capsys, *BASE, *args)
    assert code == 2
    assert err.strip() == expect


def test_plan_files_keep_the_replicas(tmp_path, capsys):
    cluster = make_cluster("h100-sxm", 64)
    layout = Layout(tp=1, dp=64, global_batch=512, seq_len=8192, zero=3, dp_replicate=4)
    p = save_plan(tmp_path / "p.yaml", "llama3-8b", cluster, layout)
    assert yaml.safe_load(p.read_text())["layout"]["dp_replicate"] == 4
    assert load_plan(p).layout == layout
    # estimate --plan keeps it; a flag overrides it
    code, out, err = run_cli(capsys, "estimate", "--plan", str(p), "--json")
    assert code == 0 and json.loads(out)["layout"]["dp_replicate"] == 4, err
    code, out, err = run_cli(capsys, "estimate", "--plan", str(p), "--dp-replicate", "2", "--json")
    assert code == 0 and json.loads(out)["layout"]["dp_replicate"] == 2, err
    # a plan written before the field existed loads with one replica
    data = yaml.safe_load(p.read_text())
    del data["layout"]["dp_replicate"]
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(data))
    assert load_plan(tmp_path / "old.yaml").layout.dp_replicate == 1
    # and a plan whose replicas do not divide its dp is refused with the line that says so
    data["layout"]["dp_replicate"] = 5
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    code, out, err = run_cli(capsys, "estimate", "--plan", str(tmp_path / "bad.yaml"))
    assert code == 2 and "layout: dp_replicate=5 must divide dp=64" in err


def test_api_estimate_takes_replicas():
    est = api.estimate("llama3-8b", "h100-sxm", 64, zero=3, dp_replicate=2)
    assert est.layout.dp_replicate == 2
