"""fp8 memory: what an fp8 run keeps for the backward and how wide its fp8 weights are.

* Transformer Engine (Megatron-Core's stack) saves each GEMM's input as one fp8 copy (1 byte): the QKV and FC1
  inputs and the FC2 input shrink by half, the output projection's fp8 input is kept on top of the 16-bit
  attention output; torchao float8 (torchtitan) saves the bf16 input, so its activations are a bf16 run's.
* fp8 weights take 1 byte on a chip whose fp8 GEMMs take any layout (Blackwell), 2 on Hopper (weight plus
  its cached transpose)."""

from __future__ import annotations

import pytest

from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.estimate import estimate_arrays, layout_arrays
from megacluster.physics import memory
from megacluster.specs import Layout, StackSpec

LLAMA8 = catalog.model("llama3.1-8b")


@pytest.mark.parametrize("tp,sp", [(1, False), (2, True), (4, False)])
def test_fp8_saved_inputs_by_hand(tp, sp):
    h, q, f = 4096, 4096, 14336
    bf16 = memory.activation_bytes_per_token_layer(LLAMA8, 8192, tp=tp, sp=sp, recompute="none")
    f8 = memory.activation_bytes_per_token_layer(LLAMA8, 8192, tp=tp, sp=sp, recompute="none", fp8_inputs=True)
    outer = tp if sp else 1
    # norm outputs (QKV and FC1 inputs): 2h -> h each; FC2 input: 2f -> f; output projection: + q (fp8 copy)
    assert float(bf16 - f8) == pytest.approx(2 * h / outer + f / tp - q / tp)
    # full recompute keeps only the layer input (16-bit residual stream): nothing changes
    assert memory.activation_bytes_per_token_layer(LLAMA8, 8192, tp=tp, sp=sp, recompute="full",
                                                   fp8_inputs=True) == pytest.approx(
        memory.activation_bytes_per_token_layer(LLAMA8, 8192, tp=tp, sp=sp, recompute="full"))


def _acts(framework: str, precision: str, gpu: str = "h100-sxm"):
    L = Layout(tp=2, dp=4, micro_batch=1, global_batch=8, seq_len=8192, sequence_parallel=True,
               recompute="none", zero=1, precision=precision)
    r = estimate_arrays(LLAMA8, make_cluster(gpu, 8), StackSpec(framework=framework), layout_arrays(L))
    return float(r["m_activations"])


def test_transformer_engine_fp8_keeps_less_than_bf16_and_torchao_the_same():
    assert _acts("megatron", "fp8") < 0.9 * _acts("megatron", "bf16")
    assert _acts("torchtitan", "fp8") == pytest.approx(_acts("torchtitan", "bf16"))


def test_fp8_weights_are_one_byte_only_where_one_copy_serves_both_layouts():
    L = Layout(tp=1, dp=8, micro_batch=1, global_batch=8, seq_len=8192, recompute="none", zero=1,
               precision="fp8")

    def weights(gpu, fp8_params):
        r = estimate_arrays(LLAMA8, make_cluster(gpu, 8), StackSpec(fp8_params=fp8_params), layout_arrays(L))
        return float(r["m_weights"]) / float(r["params_per_gpu"])

    assert catalog.gpu("b200").fp8_gemm_any_layout and not catalog.gpu("h100-sxm").fp8_gemm_any_layout
    assert weights("b200", True) == pytest.approx(1.0)
    assert weights("b200", None) == pytest.approx(2.0)
    assert weights("h100-sxm", True) == pytest.approx(2.0)
