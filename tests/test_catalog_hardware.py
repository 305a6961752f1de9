"""Accelerators and stacks across generations: aliases, chips without bf16, NVLink domains larger than a node,
and the stack variant a generation without its own gets."""

from __future__ import annotations

import json

import pytest

from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.errors import UserError
from megacluster.estimate import estimate, stack_constants
from megacluster.specs import GPUSpec, Layout, StackSpec


def test_gpu_aliases_and_case_resolve_to_the_catalog_entry():
    assert catalog.gpu("h100").id == "h100-sxm"
    assert catalog.gpu("H100-SXM").id == "h100-sxm"
    assert catalog.gpu("v100").id == "v100-32gb"
    assert catalog.fabric("ndr").id == "infiniband"
    assert catalog.stack_constants("NeMo")["id"] == "megatron"


def test_unknown_names_still_suggest_the_nearest():
    with pytest.raises(UserError, match="did you mean 'b200'"):
        catalog.gpu("b20")


def test_a_chip_without_bf16_uses_its_fp16_peak_for_16_bit_work():
    v100 = catalog.gpu("v100-32gb")
    assert "bf16" not in v100.peak_tflops
    assert v100.peak("bf16") == v100.peak("fp16") == 125e12
    assert v100.peak("fp8") == 125e12            # no fp8 either: the 16-bit peak


def test_gb200_nvlink_domain_is_the_rack_not_the_tray():
    tray = make_cluster("gb200", 144, gpus_per_node=4)
    assert tray.node.nvlink_domain == 72 and tray.node.gpus_per_node == 4
    assert make_cluster("h100-sxm", 64).node.nvlink_domain == 8
    assert make_cluster("gb200", 144, gpus_per_node=4, nvlink_domain=4).node.nvlink_domain == 4
    with pytest.raises(UserError, match="nvlink_domain must be a positive"):
        make_cluster("gb200", 144, nvlink_domain=0)


def test_tensor_parallelism_beyond_8_stays_on_nvlink_in_an_nvl72_rack():
    m = catalog.model("llama3.1-405b")
    lay = Layout(tp=16, pp=1, dp=9, micro_batch=1, global_batch=72, seq_len=8192, sequence_parallel=True,
                 recompute="full", zero=3)
    nvl72 = estimate(m, make_cluster("gb200", 144, gpus_per_node=4), lay, StackSpec(), check=False)
    split = estimate(m, make_cluster("gb200", 144, gpus_per_node=4, nvlink_domain=4), lay, StackSpec(),
                     check=False)
    assert nvl72.time_s["tp_comm"] < split.time_s["tp_comm"] / 3


@pytest.mark.parametrize("gen,attention", [("volta", "unfused"), ("ampere", "unfused"), ("hopper", "flash"),
                                           ("blackwell", "flash"), ("cdna3", "flash")])
def test_a_generation_without_its_own_stack_variant_gets_the_nearest(gen, attention):
    assert stack_constants(StackSpec(framework="megatron"), gen)["attention"] == attention


def test_v100_estimate_runs_the_ampere_era_megatron_in_fp16():
    m = catalog.model("megatron-gpt-1.7b")
    lay = Layout(tp=1, pp=1, dp=8, micro_batch=4, global_batch=32, seq_len=2048, recompute="full",
                 precision="fp16")
    e = estimate(m, make_cluster("v100", 8), lay, StackSpec(framework="megatron"))
    assert 0.2 < e.mfu < 0.6 and e.fits


def test_bf16_on_a_chip_without_it_is_one_line_and_the_default_is_the_chips_16_bit_format(capsys):
    from cli_helpers import run_cli

    base = ["estimate", "--model", "megatron-gpt-1.7b", "--gpu", "v100", "--gpus", "8", "--micro-batch", "4",
            "--recompute", "full"]
    code, out, err = run_cli(capsys, *base, "--json")
    assert code == 0, err
    assert json.loads(out)["layout"]["precision"] == "fp16"
    code, out, err = run_cli(capsys, *base, "--precision", "bf16")
    assert code == 2 and err.count("\n") == 1 and "no bf16 arithmetic; use --precision fp16" in err
    code, out, err = run_cli(capsys, *base, "--precision", "fp8")
    assert code == 2 and "no fp8 tensor cores" in err


def test_the_search_on_v100_trains_in_fp16():
    from megacluster.search import search

    res = search(catalog.model("megatron-gpt-1.7b"), make_cluster("v100", 32), global_batch=512, seq_len=2048)
    assert res.best.layout.precision == "fp16"


def test_a_gpu_entry_without_a_16_bit_peak_is_refused():
    entry = {k: v for k, v in catalog.load("gpus")["gpus"][0].items() if k != "aliases"}
    with pytest.raises(ValueError, match="bf16 or fp16"):
        GPUSpec(**{**entry, "peak_tflops": {"fp32": 19.5}})
