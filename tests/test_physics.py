"""The step model's physics against hand-checked closed forms: FLOPs per token, training-state bytes per
parameter, Korthikanti's activation memory, collective times and the pipeline bubble.

Where a figure depends on hardware constants, the test builds its own GPU, node and fabric, so that tuning the
catalog never changes what these tests check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from megacluster import catalog
from megacluster.estimate import estimate, estimate_arrays, layout_arrays
from megacluster.physics import comm, flops, memory, pipeline
from megacluster.specs import (ClusterSpec, FabricSpec, FabricTier, GPUSpec, Layout, ModelSpec, NodeSpec,
                               StackSpec)

# GPT-3 175B shape (Brown et al. 2020 Table 2.1) with Megatron's padded vocabulary, untied
GPT = ModelSpec(name="gpt-175b", n_layers=96, d_model=12288, n_heads=96, ffn_hidden=4 * 12288, vocab=51200,
                mlp="gelu", seq_len=2048)
GPT_TIED = GPT.model_copy(update={"vocab": 50257, "tied_embeddings": True})
SMALL = ModelSpec(name="small", n_layers=8, d_model=1024, n_heads=16, ffn_hidden=4096, vocab=32000, mlp="gelu",
                  seq_len=1024)

GPU = GPUSpec(id="test-gpu", name="test GPU", generation="hopper", peak_tflops={"bf16": 1000.0, "fp8": 2000.0},
              hbm_gib=80, hbm_tbs=3.0, nvlink_gbs=400.0, tdp_w=700, price_usd=1, gemm_efficiency=0.8,
              sm_count=100, gemm_k_overhead=128, attention_efficiency=0.5, hbm_efficiency=0.9)
FABRIC = FabricSpec(id="test-fabric", name="test fabric", kind="infiniband", efficiency=0.8, base_latency_us=5.0,
                    tiers=[FabricTier(name="leaf", reach_gpus=32, oversubscription=1.0, latency_us=1.0),
                           FabricTier(name="spine", reach_gpus=1024, oversubscription=2.0, latency_us=2.0)])
NODE = NodeSpec(gpus_per_node=8, nvlink_domain=8, nics_per_node=8, nic_gbps=400.0, nvlink_efficiency=0.75,
                nvlink_latency_us=3.0)


def cluster(n: int) -> ClusterSpec:
    return ClusterSpec(gpu=GPU, n_gpus=n, node=NODE, fabric=FABRIC)


# ------------------------------------------------------------------------------------------ FLOPs
def test_gpt3_model_flops_per_token_is_6n_plus_attention():
    # tied embeddings: N = 12 L h^2 + V h, and model FLOPs = 6N + 12 L h s (PaLM, Chowdhery et al. 2022 app. B)
    L, h, s, V = 96, 12288, 2048, 50257
    assert GPT_TIED.params_total == 12 * L * h * h + V * h == 174_563_733_504
    got = flops.model_flops_per_token(GPT_TIED, s)
    assert got == 6 * GPT_TIED.params_total + 12 * L * h * s == 1_076_373_430_272


def test_model_flops_match_narayanan_without_recompute():
    # 72 B s L h^2 (1 + s/6h + V/12Lh) per iteration, divided by B s tokens
    L, h, s, V = 96, 12288, 2048, 51200
    expected = 72 * L * h * h * (1 + s / (6 * h) + V / (12 * L * h))
    assert flops.model_flops_per_token(GPT, s) == pytest.approx(expected, rel=1e-12)
    assert flops.megatron_eq3_flops_per_token(L, h, s, V, full_recompute=False) == pytest.approx(expected, rel=1e-12)


def test_full_recompute_flops_match_megatron_eq3():
    # Narayanan et al. 2021 eq. 3: 96 B s L h^2 (1 + s/6h + V/16Lh): model FLOPs plus one more forward pass of
    # every transformer layer (the output layer is not recomputed)
    L, h, s, V = 96, 12288, 2048, 51200
    eq3 = 96 * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))
    assert flops.megatron_eq3_flops_per_token(L, h, s, V, full_recompute=True) == pytest.approx(eq3, rel=1e-12)
    mm = flops.layer_matmul_flops(GPT)
    layer_fwd = mm["attn_proj"] + mm["mlp"] + flops.attention_core_flops(GPT, s, causal=False)
    assert layer_fwd == 24 * h * h + 4 * s * h
    assert flops.model_flops_per_token(GPT, s) + L * layer_fwd == pytest.approx(eq3, rel=1e-12)
    assert eq3 / 1e9 == pytest.approx(1434.0, abs=0.1)     # GFLOP per token, GPT-3 175B at s = 2048


def test_hfu_with_full_recompute_is_megatron_eq3():
    s = 2048
    est = estimate(GPT, cluster(8), Layout(tp=8, global_batch=8, seq_len=s, recompute="full"), check=False)
    hw_flops_per_token = est.hfu * GPU.peak("bf16") / est.tokens_per_s_per_gpu
    eq3 = flops.megatron_eq3_flops_per_token(96, 12288, s, 51200, full_recompute=True)
    assert hw_flops_per_token == pytest.approx(eq3, rel=1e-6)


def test_model_flops_gqa_and_moe_count_active_parameters():
    # untied Llama 3.1 405B: 6 (N - V h) + 12 L h s (the input embedding is a lookup, not a matmul)
    m = catalog.model("llama3.1-405b")
    s = 8192
    expected = 6 * (m.params_total - m.vocab * m.d_model) + 12 * m.n_layers * m.d_model * s
    assert flops.model_flops_per_token(m, s) == pytest.approx(expected, rel=1e-12)
    # Mixtral 8x7B: only the top-2 experts of each token (plus the router) are counted
    mx = catalog.model("mixtral-8x7b")
    qd, vd = flops.attn_dims(mx)
    expected = 6 * (mx.params_active - mx.vocab * mx.d_model) + 6 * mx.n_layers * s * (qd + vd)
    assert flops.model_flops_per_token(mx, s) == pytest.approx(expected, rel=1e-12)
    assert mx.params_active < mx.params_total / 3


def test_causal_flash_attention_does_half_the_score_work():
    assert flops.attention_core_flops(GPT, 4096, causal=True) * 2 == flops.attention_core_flops(GPT, 4096,
                                                                                                causal=False)
    assert flops.attention_core_flops(GPT, 4096, causal=False) == 4 * 4096 * 12288


# ------------------------------------------------------------------------------------------ memory
def test_mixed_precision_adam_is_16_bytes_per_parameter():
    # Rajbhandari et al. 2020 (ZeRO) section 3.1: 2 (fp16 weights) + 2 (fp16 grads) + 12 (fp32 master, m, v)
    assert memory.mixed_precision_adam_bytes_per_param(2.0) == 16
    assert memory.optimizer_bytes_per_param() == 12
    assert memory.mixed_precision_adam_bytes_per_param(4.0) == 18      # fp32 gradient accumulation buffers


def test_step_model_holds_16_bytes_per_parameter_and_zero_stages():
    stack = StackSpec(framework="deepspeed")           # 16-bit gradients
    grad_bytes = catalog.stack_constants("deepspeed")["by_generation"]["ampere"]["grad_bytes"]
    assert grad_bytes == 2
    a100 = GPU.model_copy(update={"generation": "ampere"})
    p, m = _state_bytes_on(a100, zero=0, dp=1, stack=stack)
    assert p == SMALL.params_total
    assert sum(m.values()) == pytest.approx(16 * p, rel=1e-12)
    # ZeRO over 8 ranks (Rajbhandari et al. 2020 fig. 1): 1 shards optimizer state, 2 + gradients, 3 + weights
    p, z1 = _state_bytes_on(a100, zero=1, dp=8, stack=stack)
    assert z1 == pytest.approx({"weights": 2 * p, "gradients": 2 * p, "optimizer": 12 * p / 8})
    p, z2 = _state_bytes_on(a100, zero=2, dp=8, stack=stack)
    assert z2 == pytest.approx({"weights": 2 * p, "gradients": 2 * p / 8, "optimizer": 12 * p / 8})
    p, z3 = _state_bytes_on(a100, zero=3, dp=8, stack=stack)
    assert z3 == pytest.approx({"weights": 2 * p / 8, "gradients": 2 * p / 8, "optimizer": 12 * p / 8})


def _state_bytes_on(gpu: GPUSpec, zero: int, dp: int, stack: StackSpec) -> tuple[float, dict]:
    L = Layout(dp=dp, global_batch=dp, seq_len=1024, zero=zero)
    cl = ClusterSpec(gpu=gpu, n_gpus=dp, node=NODE, fabric=FABRIC)
    r = estimate_arrays(SMALL, cl, stack, layout_arrays(L))
    return float(r["params_per_gpu"]), {k: float(r[f"m_{k}"]) for k in ("weights", "gradients", "optimizer")}


# Korthikanti et al. 2022 section 4, GPT-3 175B layer, s = 2048, b = 1, h = 12288, a = 96, t = 8 (bytes/layer)
S, B, H, A, T = 2048, 1, 12288, 96, 8
KORTHIKANTI = {
    "no parallelism": 34 * S * B * H + 5 * A * S * S * B,                      # 2,868,903,936
    "tensor parallel": S * B * H * (10 + 24 / T) + 5 * A * S * S * B / T,      # 578,813,952
    "tensor + sequence parallel": (34 * S * B * H + 5 * A * S * S * B) / T,    # 358,612,992
    "tp + sp + selective recompute": 34 * S * B * H / T,                       # 106,954,752
    "tp + selective recompute": S * B * H * (10 + 24 / T),                     # 327,155,712
    "tp + sp + full recompute": 2 * S * B * H / T,                             # the layer input only
}
CASES = {"no parallelism": (1, False, "none"), "tensor parallel": (T, False, "none"),
         "tensor + sequence parallel": (T, True, "none"), "tp + sp + selective recompute": (T, True, "selective"),
         "tp + selective recompute": (T, False, "selective"), "tp + sp + full recompute": (T, True, "full")}


def test_korthikanti_hand_values():
    assert KORTHIKANTI["no parallelism"] == 2_868_903_936
    assert KORTHIKANTI["tensor parallel"] == 578_813_952
    assert KORTHIKANTI["tensor + sequence parallel"] == 358_612_992
    assert KORTHIKANTI["tp + sp + selective recompute"] == 106_954_752


@pytest.mark.parametrize("case", list(CASES))
def test_activation_memory_matches_korthikanti(case):
    tp, sp, rc = CASES[case]
    per_token = memory.activation_bytes_per_token_layer(GPT, S, tp=tp, sp=sp, recompute=rc, flash=False,
                                                        dropout=True)
    assert float(per_token) * S * B == pytest.approx(KORTHIKANTI[case], rel=1e-12)


@pytest.mark.parametrize("case", [c for c in CASES if "full" not in c])
def test_activation_closed_form_helper_agrees(case):
    tp, sp, rc = CASES[case]
    assert memory.korthikanti_activation_bytes(S, B, H, A, t=tp, sp=sp, selective=rc == "selective") == \
        pytest.approx(KORTHIKANTI[case], rel=1e-12)


def test_flash_attention_stores_no_score_matrix():
    with_flash = memory.activation_bytes_per_token_layer(GPT, S, tp=T, sp=True, recompute="none", flash=True,
                                                         dropout=True)
    assert float(with_flash) * S == pytest.approx(34 * S * H / T, rel=1e-12)


# ------------------------------------------------------------------------------------------ collectives
def test_ring_and_tree_closed_forms():
    size, bw, lat = 1e9, 100e9, 2e-6
    for n in (2, 8, 64, 1000):
        assert comm.ring_allreduce_time(size, n, bw, lat) == pytest.approx(
            2 * (n - 1) / n * size / bw + 2 * (n - 1) * lat, rel=1e-12)
        assert comm.ring_allgather_time(size, n, bw, lat) == pytest.approx((n - 1) / n * size / bw + (n - 1) * lat,
                                                                           rel=1e-12)
        assert comm.tree_allreduce_latency(n, lat) == pytest.approx(2 * math.ceil(math.log2(n)) * lat, rel=1e-12)
    assert comm.ring_allreduce_time(size, 1, bw) == 0
    assert comm.ring_allgather_time(size, 1, bw) == 0
    assert comm.tree_allreduce_latency(1, lat) == 0


def test_collectives_broadcast_over_arrays():
    n = np.array([1, 2, 4, 8])
    got = comm.ring_allreduce_time(8e6, n, 1e9)
    assert got.shape == (4,)
    assert got == pytest.approx([0.0, 8e-3, 12e-3, 14e-3])


def test_allreduce_inside_one_node_uses_nvlink():
    # 8 GPUs of one node: ring at NVLink bandwidth x efficiency, 2 (k-1) NVLink latency steps, no network
    size = 2e9
    nvl = 400e9 * 0.75
    expected = 2 * 7 / 8 * size / nvl + 2 * 7 * 3e-6
    assert comm.allreduce_time(cluster(8), size, 8, 8, 8) == pytest.approx(expected, rel=1e-12)


def test_allreduce_across_nodes_is_hierarchical():
    # 64 ranks, 8 per node, spread over 64 GPUs: the ring's node-crossing edges share the 8 NICs of a node
    # (8 x 400 Gb/s / 8 GPUs x 0.8 = 40 GB/s per GPU, x 8 = 320 GB/s, capped by NVLink's 400 x 0.75 = 300).
    # A group spanning more GPUs than a node goes through the leaf (+1 us), more than the leaf's reach (32)
    # through the spine (+2 us, 2:1 oversubscribed: 320 / 2 = 160 GB/s). Tree over 8 nodes: 2 x 3 steps.
    size = 2e9
    nic_per_gpu = 8 * 400 / 8 / 8 * 0.8 * 1e9
    bw = min(8 * nic_per_gpu / 2.0, 400e9 * 0.75)
    lat = 2 * 7 * 3e-6 + 2 * 3 * (5e-6 + 1e-6 + 2e-6)
    expected = 2 * 63 / 64 * size / bw + lat
    assert comm.allreduce_time(cluster(64), size, 64, 8, 64) == pytest.approx(expected, rel=1e-12)
    # within the leaf (32 GPUs, 4 nodes): full NIC bandwidth, capped by NVLink; leaf latency only
    bw = min(8 * nic_per_gpu, 400e9 * 0.75)
    expected = 2 * 31 / 32 * size / bw + 2 * 7 * 3e-6 + 2 * 2 * (5e-6 + 1e-6)
    assert comm.allreduce_time(cluster(32), size, 32, 8, 32) == pytest.approx(expected, rel=1e-12)


def test_oversubscribed_tier_divides_bandwidth():
    # one rank per node over 2048 GPUs crosses the spine (reach 1024, 2:1): NIC bandwidth halves
    size = 1e9
    nic_per_gpu = 8 * 400 / 8 / 8 * 0.8 * 1e9
    bw = nic_per_gpu / 2.0
    nodes = 256
    lat = 0 + 2 * math.ceil(math.log2(nodes)) * (5e-6 + 1e-6 + 2e-6)
    expected = 2 * (nodes - 1) / nodes * size / bw + lat
    assert comm.allreduce_time(cluster(2048), size, nodes, 1, 2048) == pytest.approx(expected, rel=1e-12)


def test_allgather_latency_is_the_ring_across_nodes():
    """All-gather / reduce-scatter run as a ring (NCCL has no tree for them): n - 1 steps, nodes - 1 of them over
    the network, so latency grows linearly with the ranks while the all-reduce's tree grows with log2(nodes)."""
    size = 1e6
    nic_per_gpu = 8 * 400 / 8 / 8 * 0.8 * 1e9
    for n, per_node in ((256, 1), (32, 8)):
        nodes = n // per_node
        lat_net = 5e-6 + 1e-6 + (2e-6 if 8 * nodes > 1024 else 0.0)
        bw = min(per_node * nic_per_gpu / (2.0 if 8 * nodes > 1024 else 1.0), 400e9 * 0.75)
        expected = (n - 1) / n * size / bw + (n - nodes) * 3e-6 + (nodes - 1) * lat_net
        assert comm.allgather_time(cluster(8 * nodes), size, n, per_node, 8 * nodes) == pytest.approx(expected,
                                                                                                    rel=1e-12)
    # within one node: the ring's n - 1 NVLink steps, as before
    assert comm.ring_allgather_latency(8, 1, 3e-6, 5e-6) == pytest.approx(7 * 3e-6, rel=1e-12)
    # many ranks: the ring's latency outgrows the tree's
    ag = comm.allgather_time(cluster(2048), size, 256, 1, 2048)
    ar = comm.allreduce_time(cluster(2048), size, 256, 1, 2048)
    assert ag > ar / 2


def test_allgather_is_half_an_allreduce_in_bandwidth():
    size = 4e9
    ar = comm.allreduce_time(cluster(8), size, 8, 8, 8)
    ag = comm.allgather_time(cluster(8), size, 8, 8, 8)
    assert ag == pytest.approx(ar / 2, rel=1e-12)


def test_alltoall_splits_nvlink_and_nic_traffic():
    # 16 ranks, 8 per node: 7/16 of the buffer over NVLink, 8/16 over the GPU's NIC share, both at once
    size = 1e9
    nvl = 400e9 * 0.75
    nic = 8 * 400 / 8 / 8 * 0.8 * 1e9
    expected = max(7 / 16 * size / nvl, 8 / 16 * size / nic) + 5e-6 + 1e-6     # through the leaf
    assert comm.alltoall_time(cluster(16), size, 16, 8, 16) == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------------------------ pipeline
@pytest.mark.parametrize("p,m,v", [(2, 8, 1), (8, 64, 1), (16, 128, 1), (8, 64, 2), (16, 32, 4)])
def test_bubble_fraction_closed_forms(p, m, v):
    # Narayanan et al. 2021 section 2.2: 1F1B (p-1)/m, interleaved with v chunks per GPU (p-1)/(v m)
    assert pipeline.bubble_fraction(p, m) == pytest.approx((p - 1) / m, rel=1e-12)
    assert pipeline.bubble_fraction(p, m, v) == pytest.approx((p - 1) / (v * m), rel=1e-12)


def test_interleaved_bubble_with_fewer_micro_batches_than_stages():
    """m < p micro-batches cannot fill the ring: each of the v-1 returns to the first rank waits p-m chunk
    times on top of the p-1 of fill and drain, against m v chunk times of work. Hand count for p=4, m=2,
    v=2: chunk times of work 4, idle (2-1)(4-2) + 3 = 5, so 5/4."""
    assert pipeline.bubble_fraction(4, 2, 2) == pytest.approx(5 / 4, rel=1e-12)
    assert pipeline.bubble_fraction(4, 2, 1) == pytest.approx(3 / 2, rel=1e-12)     # plain 1F1B
    # continuous at m = p, and interleaving never hurts
    assert pipeline.bubble_fraction(16, 16 - 1e-9, 8) == pytest.approx(pipeline.bubble_fraction(16, 16, 8))
    assert pipeline.bubble_fraction(16, 8, 8) < pipeline.bubble_fraction(16, 8, 1)


def test_dualpipe_bubble_is_about_half_of_1f1b():
    assert pipeline.bubble_fraction(16, 64, schedule="dualpipe") == pytest.approx((16 / 2 - 1) / 64)
    # DualPipeV: DualPipe's bubble for 2p stages over two stages' work per micro-batch on each of p ranks
    assert pipeline.bubble_fraction(8, 64, 2, "dualpipe-v") == pytest.approx((8 - 1) / (2 * 64))
    assert pipeline.bubble_fraction(8, 64, 2, "dualpipe-v") < pipeline.bubble_fraction(8, 64, 1)


@pytest.mark.parametrize("vp", [1, 2])
def test_step_model_bubble_is_the_closed_form_share_of_compute(vp):
    # pp = 4, 16 micro-batches: bubble / compute = 3/16 (1F1B) or 3/32 (two chunks per GPU)
    L = Layout(tp=1, pp=4, dp=1, vp=vp, micro_batch=1, global_batch=16, seq_len=1024)
    est = estimate(SMALL, cluster(4), L, StackSpec(framework="megatron"))
    r = estimate_arrays(SMALL, cluster(4), StackSpec(framework="megatron"), layout_arrays(L))
    assert est.n_microbatches == 16
    assert float(r["t_bubble"]) / float(r["t_compute"]) == pytest.approx(3 / (16 * vp), rel=1e-12)


# ------------------------------------------------------------------------------------------ breakdown
@pytest.mark.parametrize("recompute", [
    "none", "selective",
    "full",
])
def test_time_breakdown_adds_up_to_the_step(recompute):
    L = Layout(tp=8, pp=4, dp=2, vp=2, global_batch=64, seq_len=2048, recompute=recompute)
    est = estimate(GPT, cluster(64), L, StackSpec(framework="megatron"), check=False)
    assert sum(est.time_s.values()) == pytest.approx(est.step_time_s, rel=1e-9)
    assert sum(est.phases_s.values()) == pytest.approx(est.step_time_s, rel=1e-9)


# ------------------------------------------------------------------ GEMM and attention kernel model
def test_gemm_efficiency_follows_k_over_k_plus_k0():
    """Same output tiles, inner dimension K vs K0: the rate is peak x eff x K/(K+K0) (launch time aside)."""
    from megacluster.physics import compute
    gpu = GPU.model_copy(update={"gemm_launch_us": 0.0, "hbm_tbs": 1e6})   # keep clear of the HBM roofline
    m, n = 128 * 100, 256       # exactly one full wave of 100 tiles
    for k in (128, 1024, 16384):
        t = compute.gemm_time(gpu, m, n, k)
        rate = 2.0 * m * n * k / t
        assert rate == pytest.approx(1000e12 * 0.8 * k / (k + 128), rel=1e-9)
    # fp8 doubles K0 (the K loop takes half the time per element)
    t8 = compute.gemm_time(gpu, m, n, 1024, fp8=True)
    assert 2.0 * m * n * 1024 / t8 == pytest.approx(2000e12 * 0.8 * 1024 / (1024 + 256), rel=1e-9)


def test_gemm_wave_quantisation():
    """101 tiles on 100 SMs take two waves: half the rate of 100 tiles' one wave, per FLOP."""
    from megacluster.physics import compute
    gpu = GPU.model_copy(update={"gemm_launch_us": 0.0, "hbm_tbs": 1e6})
    t100 = compute.gemm_time(gpu, 128 * 100, 256, 8192)
    t101 = compute.gemm_time(gpu, 128 * 101, 256, 8192)
    assert t101 == pytest.approx(2 * t100, rel=1e-9)


def test_linear_layer_runs_forward_dgrad_and_wgrad():
    from megacluster.physics import compute
    fwd, bwd = compute.linear_times(GPU, 8192, 4096, 1024)
    assert fwd == pytest.approx(compute.gemm_time(GPU, 8192, 1024, 4096))
    assert bwd == pytest.approx(compute.gemm_time(GPU, 8192, 4096, 1024) + compute.gemm_time(GPU, 4096, 1024, 8192))
    assert 1.8 * fwd < bwd < 2.5 * fwd


def test_attention_rate_grows_with_sequence_length():
    from megacluster.physics import compute
    gpu = GPU.model_copy(update={"attention_half_seq": 500.0, "attention_bwd_ratio": 0.8})
    assert compute.attention_rate(gpu, 500) == pytest.approx(0.5 * 1000e12 * 0.5)
    assert compute.attention_time(gpu, 1e12, 500, backward=True) == pytest.approx(
        compute.attention_time(gpu, 1e12, 500) / 0.8)
    assert compute.attention_rate(gpu, 1e9) == pytest.approx(1000e12 * 0.5, rel=1e-6)


def test_sequence_parallel_moves_the_same_tp_bytes_as_all_reduce():
    """Korthikanti et al. 2022: all-gather + reduce-scatter = one all-reduce, so SP does not cut TP traffic."""
    lay = Layout(tp=8, pp=1, dp=1, micro_batch=1, global_batch=1, seq_len=2048, recompute="selective")
    c = cluster(8)
    with_sp = estimate(GPT, c, lay, check=False).time_s["tp_comm"]
    without = estimate(GPT, c, lay.model_copy(update={"sequence_parallel": False}), check=False).time_s["tp_comm"]
    assert with_sp == pytest.approx(without, rel=1e-6)


# Ring attention (context parallelism): PyTorch's code around the flash kernels moves bytes at HBM speed
LLAMA_SMALL = ModelSpec(name="llama-small", n_layers=4, d_model=1024, n_heads=16, n_kv_heads=4, ffn_hidden=2816,
                        vocab=32000, mlp="swiglu", seq_len=8192)


def _attention_time(cp: int, monkeypatch, ring_bytes=None) -> float:
    """torchtitan's attention time for LLAMA_SMALL on 8 test GPUs; ``ring_bytes`` replaces its cp_ring_bytes."""
    import megacluster.estimate as est
    real = est.stack_constants

    def patched(stack, generation):
        c = real(stack, generation)
        return c if ring_bytes is None else {**c, "cp_ring_bytes": ring_bytes}
    with monkeypatch.context() as mp:
        mp.setattr(est, "stack_constants", patched)
        L = Layout(dp=8 // cp, cp=cp, global_batch=8 // cp, seq_len=8192, zero=3, recompute="none")
        r = estimate_arrays(LLAMA_SMALL, cluster(8), StackSpec(framework="torchtitan"), layout_arrays(L))
    return float(r["t_attention"])


def test_ring_attention_bookkeeping_is_the_stack_byte_count_at_hbm_speed(monkeypatch):
    from megacluster.estimate import CP_RING_KEYS
    titan = catalog.stack_constants("torchtitan")["by_generation"]["default"]
    rb, none = titan["cp_ring_bytes"], {k: 0.0 for k in CP_RING_KEYS}
    assert titan["cp_kv_repeated"] is True
    cp = 4
    added = _attention_time(cp, monkeypatch) - _attention_time(cp, monkeypatch, none)
    T = 8192 / cp                                     # tokens per GPU, micro-batch 1
    q = T * 16 * 64                                   # attention output elements
    kv = T * 16 * 64                                  # K repeated to all 16 query heads (repeat_kv before SDPA)
    steps = cp - 1
    fwd = q * (rb["fwd_q"] + steps * rb["fwd_step_q"]) + kv * (rb["fwd_kv"] + steps * rb["fwd_step_kv"])
    bwd = q * (rb["bwd_q"] + steps * rb["bwd_step_q"]) + kv * (rb["bwd_kv"] + steps * rb["bwd_step_kv"])
    rate = GPU.hbm_tbs * 1e12 * GPU.hbm_efficiency
    assert added == pytest.approx(4 * (fwd + bwd) / rate, rel=1e-9)      # 4 layers, 1 micro-batch
    # without context parallelism there is no ring and nothing is added
    assert _attention_time(1, monkeypatch) == pytest.approx(_attention_time(1, monkeypatch, none), rel=1e-12)


def test_unknown_ring_bytes_key_is_refused(monkeypatch):
    from megacluster.estimate import stack_constants
    real = catalog.stack_constants

    def fake(fw):
        entry = real(fw)
        typo = {"fwd_q": 12, "fwd_stepq": 38}
        variants = {k: {**v, "cp_ring_bytes": typo} for k, v in entry["by_generation"].items()}
        return {**entry, "by_generation": variants}
    monkeypatch.setattr(catalog, "stack_constants", fake)
    with pytest.raises(ValueError, match="fwd_stepq"):
        stack_constants(StackSpec(framework="torchtitan"), "hopper")


def test_attention_kernel_factor_is_read_per_gpu_generation():
    from megacluster.estimate import stack_constants
    titan = StackSpec(framework="torchtitan")
    # FlashAttention-2 against FlashAttention-3 is a Hopper ratio; on Ampere the GPU's constant already is FA2
    assert stack_constants(titan, "hopper")["attention_kernel_efficiency"] == pytest.approx(0.56)
    assert stack_constants(titan, "ampere")["attention_kernel_efficiency"] == 1.0
    assert stack_constants(StackSpec(framework="meta-internal"), "hopper")["attention_kernel_efficiency"] == \
        pytest.approx(0.56)
    # Transformer Engine picks cuDNN attention on Hopper: 0.91 of FlashAttention-3 (FA3 paper figs. 5-6)
    assert stack_constants(StackSpec(framework="megatron"), "hopper")["attention_kernel_efficiency"] == \
        pytest.approx(0.91)
    assert stack_constants(StackSpec(framework="megatron"), "ampere")["attention_kernel_efficiency"] == 1.0


def _layer_times(framework: str, recompute: str) -> dict[str, float]:
    L = Layout(dp=8, global_batch=8, seq_len=8192, zero=1, recompute=recompute)
    r = estimate_arrays(LLAMA_SMALL, cluster(8), StackSpec(framework=framework), layout_arrays(L))
    return {k: float(np.ravel(v)[0]) for k, v in r.items()}


def test_megatron_core_selective_recompute_reruns_the_flash_attention_forward():
    """Megatron-Core checkpoints the core attention under 'selective' even with flash kernels; torchtitan's
    per-op policy saves the SDPA output, so its selective recompute reruns no attention."""
    from megacluster.physics import compute
    from megacluster.physics.flops import attention_core_flops
    mc = _layer_times("megatron", "selective")
    # the recompute is one flash forward per layer: 4 layers, one micro-batch of 8192 tokens
    from megacluster.estimate import stack_constants
    kernel = stack_constants(StackSpec(framework="megatron"), GPU.generation)["attention_kernel_efficiency"]
    fwd = compute.attention_time(GPU, attention_core_flops(LLAMA_SMALL, 8192) * 8192, 8192) / kernel
    assert mc["t_recompute"] == pytest.approx(4 * fwd, rel=1e-9)
    assert _layer_times("megatron", "none")["t_recompute"] == 0.0
    titan = _layer_times("torchtitan", "selective")
    assert titan["t_recompute"] < titan["t_gemm_attn_proj"] + titan["t_gemm_mlp"]    # GEMMs only, no attention
    # HFU counts the rerun attention FLOPs (non-causal convention, as model FLOPs do); MFU does not
    extra = 4 * attention_core_flops(LLAMA_SMALL, 8192, causal=False) / mc["model_flops_per_token"]
    assert mc["hfu"] == pytest.approx(mc["mfu"] * (1 + extra), rel=1e-9)


def test_loss_traffic_is_the_stack_byte_count_per_logit():
    """Megatron's vocab-parallel cross-entropy moves 52 bytes per logit, PyTorch's cross_entropy 40."""
    from megacluster.estimate import LOSS_BYTES_PER_LOGIT, stack_constants
    assert stack_constants(StackSpec(framework="megatron"), "hopper")["loss_traffic"] == 52.0
    assert stack_constants(StackSpec(framework="torchtitan"), "hopper")["loss_traffic"] == LOSS_BYTES_PER_LOGIT
    import megacluster.estimate as est
    real = est.stack_constants
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(est, "stack_constants", lambda s, g: {**real(s, g), "loss_traffic": 40.0})
        as_pytorch = _layer_times("megatron", "none")["t_output_layer"]
    logits = 8192 * LLAMA_SMALL.vocab
    rate = GPU.hbm_tbs * 1e12 * GPU.hbm_efficiency
    assert _layer_times("megatron", "none")["t_output_layer"] - as_pytorch == pytest.approx(
        logits * 12.0 / rate, rel=1e-9)


def test_expected_slowest_of_n_normal_draws():
    """Blom's approximation of the expected largest of N standard normals: 0 for one draw, about 0.56 for
    two (exact 1/sqrt(pi)), 1.42 for 8 (tables of normal order statistics), growing like sqrt(2 ln N)."""
    from megacluster.physics.straggler import expected_max_normal, slowest_rank_factor

    assert float(expected_max_normal(1)) == 0.0
    assert float(expected_max_normal(2)) == pytest.approx(1 / math.sqrt(math.pi), abs=0.03)
    assert float(expected_max_normal(8)) == pytest.approx(1.423, abs=0.015)
    e = expected_max_normal(np.array([8, 512, 16384]))
    assert np.all(np.diff(e) > 0) and e[-1] < math.sqrt(2 * math.log(16384))
    assert slowest_rank_factor(1, 0.015) == 1.0
    assert slowest_rank_factor(8, 0.0) == 1.0


def test_slowest_rank_stretches_compute_and_bubble_only():
    """With a speed spread the step grows by spread x e(N) of its compute, bubble and contention time, and
    the wait grows with the GPU count; communication and the optimizer are unchanged."""
    from megacluster.physics.straggler import slowest_rank_factor

    gpu = GPU.model_copy(update={"speed_spread": 0.02})
    for n, dp in ((16, 2), (1024, 128)):
        c0 = ClusterSpec(gpu=GPU, n_gpus=n, node=NODE, fabric=FABRIC)
        c1 = ClusterSpec(gpu=gpu, n_gpus=n, node=NODE, fabric=FABRIC)
        lay = Layout(tp=4, pp=2, dp=dp, micro_batch=1, global_batch=8 * dp, seq_len=1024, recompute="selective")
        a, b = estimate(SMALL, c0, lay, check=False), estimate(SMALL, c1, lay, check=False)
        stretched = sum(a.time_s[k] for k in ("gemm_attn_proj", "gemm_mlp", "attention", "memory_bound",
                                              "recompute", "output_layer", "tp_comm", "cp_comm", "ep_comm",
                                              "bubble", "overlap_slowdown"))
        assert a.time_s["straggler"] == 0.0
        assert b.time_s["straggler"] == pytest.approx((slowest_rank_factor(n, 0.02) - 1) * stretched, rel=1e-9)
        assert b.step_time_s == pytest.approx(a.step_time_s + b.time_s["straggler"], rel=1e-9)
        assert b.time_s["dp_comm"] == pytest.approx(a.time_s["dp_comm"])


def test_zero_bubble_h1_is_a_third_of_1f1b():
    """Qi et al. 2023: ZB-H1's bubble is (p-1)(T_F + T_B - T_W), a third of 1F1B's at equal pass times."""
    for p, m in ((16, 144), (4, 8)):
        assert pipeline.bubble_fraction(p, m, 1, "zb-h1") == pytest.approx(pipeline.bubble_fraction(p, m, 1) / 3)


def test_shared_experts_hide_their_own_time_of_the_all_to_all():
    """A stack that runs the shared experts during the MoE all-to-all (DeepSeek-V2's HAI-LLM) exposes the
    all-to-all less by at most the shared experts' GEMM time, never below zero."""
    moe = ModelSpec(name="moe", n_layers=8, d_model=2048, n_heads=16, ffn_hidden=8192, vocab=32000,
                    mlp="swiglu", seq_len=2048,
                    moe=dict(n_experts=64, top_k=6, expert_ffn_hidden=1024, n_shared_experts=2))
    lay = Layout(tp=1, pp=1, dp=64, ep=64, micro_batch=1, global_batch=64, seq_len=2048, recompute="none")
    c = cluster(64)
    stack = catalog.load("stacks")["stacks"]
    v2 = next(s for s in stack if s["id"] == "hai-llm-v2")["by_generation"]["default"]
    with_overlap = estimate(moe, c, lay, StackSpec(framework="hai-llm-v2"), check=False)
    v2["ep_overlap_shared_experts"] = False
    try:
        without = estimate(moe, c, lay, StackSpec(framework="hai-llm-v2"), check=False)
    finally:
        v2["ep_overlap_shared_experts"] = True
    assert 0.0 <= with_overlap.time_s["ep_comm"] < without.time_s["ep_comm"]
    assert with_overlap.step_time_s < without.step_time_s


def test_megatron_core_leaves_one_gradient_bucket_exposed():
    """Megatron-Core reduces gradients in buckets of max(40M, 1M x DP) parameters during the backward; the
    last bucket's reduce-scatter and the first bucket's weight all-gather (ZeRO-1) stay exposed even when the
    rest hides: exposed DP time is at least that, and grows with the DP degree (bigger buckets)."""
    big = GPT.model_copy(update={"n_layers": 8})
    out = []
    for dp in (64, 256):
        c = cluster(8 * dp)
        lay = Layout(tp=8, pp=1, dp=dp, micro_batch=1, global_batch=4 * dp, seq_len=2048, recompute="selective",
                     zero=1)
        est = estimate(big, c, lay, StackSpec(framework="megatron"), check=False)
        p_gpu = float(estimate_arrays(big, c, StackSpec(framework="megatron"), layout_arrays(lay))["params_per_gpu"])
        b = min(p_gpu, max(40e6, 1e6 * dp))
        one = comm.allgather_time(c, b * 2.0, dp, 1, 8 * dp)          # bf16 gradients and weights, one per node
        assert est.time_s["dp_comm"] >= 2 * float(one) * (1 - 1e-9)
        out.append(est.time_s["dp_comm"])
    assert out[1] > out[0]


def test_fsdp_backward_post_prefetch_exposes_the_backward_gathers():
    """FSDP1 BACKWARD_POST (Composer's default) issues each backward all-gather after the previous unit's
    gradients: the backward's gathers (one stage's weights per micro-batch) are exposed, so the exposed DP
    time grows by at least the part that used to hide, and never exceeds that plus the old figure."""
    lay = Layout(tp=1, pp=1, dp=16, micro_batch=2, global_batch=64, seq_len=1024, recompute="none", zero=3)
    c = cluster(16)
    comp = next(s for s in catalog.load("stacks")["stacks"] if s["id"] == "composer")["by_generation"]["default"]
    post = estimate(SMALL, c, lay, StackSpec(framework="composer"), check=False)
    comp["fsdp_backward_prefetch"] = "pre"
    try:
        pre = estimate(SMALL, c, lay, StackSpec(framework="composer"), check=False)
    finally:
        comp["fsdp_backward_prefetch"] = "post"
    arr = estimate_arrays(SMALL, c, StackSpec(framework="composer"), layout_arrays(lay))
    n_mb = float(arr["n_microbatches"])
    ag = comm.allgather_time(c, float(arr["params_per_gpu"]) * 2.0, 16, 8, 16)
    assert post.time_s["dp_comm"] >= n_mb * float(ag) * (1 - 1e-9)
    assert pre.time_s["dp_comm"] <= post.time_s["dp_comm"] <= pre.time_s["dp_comm"] + n_mb * float(ag) * (1 + 1e-9)
