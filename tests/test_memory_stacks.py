"""Stack-dependent memory and overlap physics, against hand counts.

* torchtitan's per-op selective checkpointing keeps the odd matmul outputs of a layer (Q, V, MLP-up, MLP-down
  for a gated model) plus the layer input and the attention output.
* The first pipeline stage never holds more micro-batches than the step has.
* FSDP2 shards are the fp32 master copy; torchtitan keeps a stage's weights and fp32 gradients unsharded
  when it pipelines.
* Communication hidden behind compute slows that compute by the GPU's overlap_compute_slowdown.

The GPU, node and fabric are the test's own (tests/test_physics.py), so catalog tuning never changes them."""

from __future__ import annotations

import pytest

from megacluster.estimate import estimate, estimate_arrays, layout_arrays, stack_constants
from megacluster.physics import memory
from megacluster.specs import ClusterSpec, Layout, ModelSpec, StackSpec

from test_physics import FABRIC, GPT, GPU, NODE, cluster

# Llama 3.1 8B shape (Meta model card / config.json)
LLAMA8 = ModelSpec(name="llama-8b", n_layers=32, d_model=4096, n_heads=32, n_kv_heads=8, ffn_hidden=14336,
                   vocab=128256, mlp="swiglu", seq_len=8192)


def test_every_other_matmul_keeps_q_v_up_down_by_hand():
    h, q, kv, f = 4096, 4096, 1024, 14336
    # matmuls in call order: Q, K, V, O, w1 (gate), w3 (up), w2 (down); 1st, 3rd, 5th, 7th kept
    assert memory.every_other_matmul_bytes(LLAMA8, f, tp=1) == 2 * (q + kv + f + h)
    # tensor parallel: column-parallel outputs split, the row-parallel down projection's partial sum is full width
    assert memory.every_other_matmul_bytes(LLAMA8, f, tp=8) == 2 * (q / 8 + kv / 8 + f / 8 + h)
    per_token = memory.activation_bytes_per_token_layer(LLAMA8, 8192, tp=1, recompute="selective",
                                                        selective_policy="every_other_matmul")
    assert per_token == 2 * h + 2 * q + 2 * (q + kv + f + h)     # + layer input and attention output
    kept_all = memory.activation_bytes_per_token_layer(LLAMA8, 8192, tp=1, recompute="selective")
    assert per_token < kept_all / 2


def test_unknown_selective_policy_is_refused():
    with pytest.raises(ValueError, match="policy"):
        memory.activation_bytes_per_token_layer(LLAMA8, 8192, recompute="selective", selective_policy="bogus")


def _acts(L: Layout, stack: StackSpec, model: ModelSpec = GPT) -> float:
    r = estimate_arrays(model, cluster(L.n_gpus), stack, layout_arrays(L))
    return float(r["m_activations"])


def test_first_stage_holds_no_more_micro_batches_than_there_are():
    """Interleaved 1F1B keeps pp + (pp-1)/vp micro-batches in flight, but a step of m < that has only m."""
    base = dict(tp=8, pp=8, dp=1, vp=2, micro_batch=1, seq_len=2048, recompute="none")
    many = _acts(Layout(global_batch=64, **base), StackSpec(framework="megatron"))
    few = _acts(Layout(global_batch=4, **base), StackSpec(framework="megatron"))
    per_tok = memory.activation_bytes_per_token_layer(GPT, 2048, tp=8, sp=True, recompute="none", flash=True,
                                                      dropout=True)
    layer_mb = per_tok * 2048 * (GPT.n_layers / 8)
    assert many - few == pytest.approx(layer_mb * ((8 + 7 / 2) - 4), rel=1e-9)


def _mem(L: Layout, stack: StackSpec, model: ModelSpec = LLAMA8) -> dict[str, float]:
    """The step model's memory (m_*), data-parallel times (t_dp*) and parameters per GPU of one layout."""
    r = estimate_arrays(model, cluster(L.n_gpus), stack, layout_arrays(L))
    return {k: float(v) for k, v in r.items() if k.startswith(("m_", "t_dp", "params"))}


def _states(L: Layout, stack: StackSpec) -> dict[str, float]:
    r = _mem(L, stack)
    return {k: r[f"m_{k}"] for k in ("weights", "gradients", "optimizer")} | {"params": r["params_per_gpu"]}


def test_fsdp2_keeps_16_bytes_per_parameter_sharded():
    """torchtitan: fp32 shard (master) + fp32 grad + Adam m, v = 16 bytes a parameter, all sharded."""
    s = _states(Layout(dp=8, global_batch=8, seq_len=8192, zero=3), StackSpec(framework="torchtitan"))
    assert s["weights"] + s["gradients"] + s["optimizer"] == pytest.approx(16 * s["params"] / 8, rel=1e-12)


def test_torchtitan_pipelining_keeps_stage_weights_and_grads_unsharded():
    stack = StackSpec(framework="torchtitan")
    c = stack_constants(stack, "hopper")
    assert c["fsdp_unsharded_weights"] == "with_pp" and c["fsdp_unsharded_grads"] == "with_pp"
    s = _states(Layout(pp=4, dp=8, global_batch=32, seq_len=8192, zero=3), stack)
    p = s["params"]
    assert s["weights"] == pytest.approx(2 * p, rel=1e-12)                   # bf16, unsharded
    assert s["gradients"] == pytest.approx(4 * p / 8 + 4 * p, rel=1e-12)     # fp32 shard + fp32 accumulation


def test_hidden_communication_slows_compute_by_the_gpu_constant():
    L = Layout(tp=8, pp=1, dp=8, micro_batch=1, global_batch=8, seq_len=2048, zero=1)
    stack = StackSpec(framework="megatron")                  # hopper: chunked TP overlap, overlapped DP
    fast = estimate(GPT, cluster(64), L, stack, check=False)
    assert fast.time_s["overlap_slowdown"] == 0.0            # the test GPU has no contention constant
    slow_gpu = GPU.model_copy(update={"overlap_compute_slowdown": 0.2})
    slow = estimate(GPT, ClusterSpec(gpu=slow_gpu, n_gpus=64, node=NODE, fabric=FABRIC), L, stack, check=False)
    added = slow.time_s["overlap_slowdown"]
    assert added > 0
    assert slow.step_time_s == pytest.approx(fast.step_time_s + added, rel=1e-9)
    # an A100 (Megatron 2021: nothing overlapped) pays nothing
    a100 = slow_gpu.model_copy(update={"generation": "ampere"})
    none = estimate(GPT, ClusterSpec(gpu=a100, n_gpus=64, node=NODE, fabric=FABRIC), L, stack, check=False)
    assert none.time_s["overlap_slowdown"] == 0.0


def test_pytorch_async_tp_hides_only_the_forward_collectives():
    """torchtitan's async TP (async_tp_scope: forward) pipelines the forward's 4 TP collectives per layer (and
    the selective recompute's 2 all-gathers); the backward's 4 stay as exposed as vanilla TP's."""
    L = Layout(tp=8, pp=1, dp=1, micro_batch=1, global_batch=1, seq_len=2048, zero=1, recompute="selective")
    vanilla = estimate(LLAMA8, cluster(8), L, StackSpec(framework="torchtitan", compile=True), check=False)
    asyn = estimate(LLAMA8, cluster(8), L, StackSpec(framework="torchtitan", compile=True, async_tp=True),
                    check=False)
    n_tp = 8 + 2                                              # fwd 4 + bwd 4 + 2 re-run all-gathers
    v, a = vanilla.time_s["tp_comm"], asyn.time_s["tp_comm"]
    assert v > 0
    backward = v * 4 / n_tp
    assert backward < a < v
    one = v / n_tp                                            # one collective, all layers
    # each of the 6 forward collectives keeps at least its first of 8 chunks exposed, at most all of it
    assert 6 * one / 8 * (1 - 1e-9) <= a - backward <= 6 * one * (1 + 1e-9)
    # Megatron's userbuffers overlap covers the backward too: less of its TP time stays exposed
    c_tt = stack_constants(StackSpec(framework="torchtitan", async_tp=True), "hopper")
    c_mg = stack_constants(StackSpec(framework="megatron"), "hopper")
    assert (c_tt["tp_overlap"], c_tt["tp_overlap_scope"]) == ("chunked", "forward")
    assert (c_mg["tp_overlap"], c_mg["tp_overlap_scope"]) == ("chunked", "both")


def test_unknown_tp_overlap_scope_is_refused(monkeypatch):
    from megacluster import catalog
    real = catalog.stack_constants

    def fake(fw):
        entry = real(fw)
        variants = {k: {**v, "async_tp_scope": "sideways"} for k, v in entry["by_generation"].items()}
        return {**entry, "by_generation": variants}

    monkeypatch.setattr(catalog, "stack_constants", fake)
    with pytest.raises(ValueError, match="scope"):
        stack_constants(StackSpec(framework="torchtitan", async_tp=True), "hopper")


def test_meta_stack_cuts_one_layer_chunks_with_embedding_and_output_chunks():
    """Llama 3 paper 3.3.2: the first chunk holds only the embedding and the last only the output layer, so a
    chunk is one layer: 126 layers + 2 over 16 pipeline ranks is 8 chunks per rank. A vp of 1 (the
    default) takes that; a vp above 1 that the user sets is kept."""
    from megacluster import catalog

    model = catalog.model("llama3.1-405b")
    stack = StackSpec(framework="meta-internal")
    base = dict(tp=8, pp=16, dp=1, micro_batch=1, global_batch=32, seq_len=8192, recompute="none", zero=1)
    cl = cluster(128)
    unset = estimate(model, cl, Layout(**base), stack, check=False)
    eight = estimate(model, cl, Layout(vp=8, **base), stack, check=False)
    two = estimate(model, cl, Layout(vp=2, **base), stack, check=False)
    assert unset.step_time_s == pytest.approx(eight.step_time_s, rel=1e-12)
    assert (unset.layout.vp, unset.virtual_stages, two.virtual_stages) == (1, 8.0, 2.0)
    assert unset.memory_gib_per_gpu == pytest.approx(eight.memory_gib_per_gpu, rel=1e-12)
    # the bubble is (pp-1)/(vp m) of the micro-batches' time: 4x larger with 2 chunks than with 8
    def mb_time(e):
        return sum(e.time_s[k] for k in ("gemm_attn_proj", "gemm_mlp", "attention", "memory_bound", "recompute",
                                         "output_layer", "tp_comm", "cp_comm", "ep_comm"))
    assert two.time_s["bubble"] / mb_time(two) == pytest.approx(4 * eight.time_s["bubble"] / mb_time(eight),
                                                                rel=1e-9)
    # one-layer chunks balance the pipeline: (126 + 2) / 16 = 8 layers on a middle rank, 7 beside the embedding
    # and the output layer on the end ranks; the slowest rank is a middle one, 8 layers and no output layer,
    # where an even split (vp 2: 7.875 layers a rank) leaves the output layer on the last rank's 7.875
    assert eight.time_s["output_layer"] == 0.0 and two.time_s["output_layer"] > 0.0
    assert eight.time_s["gemm_mlp"] / two.time_s["gemm_mlp"] == pytest.approx(8 / 7.875, rel=1e-9)
    # Megatron's stack does not interleave unless asked: 1F1B's bubble, (pp-1)/m of the micro-batches' time
    mg = estimate(model, cl, Layout(**base), StackSpec(framework="megatron"), check=False)
    mg2 = estimate(model, cl, Layout(vp=2, **base), StackSpec(framework="megatron"), check=False)
    assert (mg.virtual_stages, mg2.virtual_stages) == (1.0, 2.0)
    assert mg.time_s["bubble"] == pytest.approx(2 * mg2.time_s["bubble"], rel=1e-9)
    assert stack_constants(stack, "hopper")["layers_per_chunk"] == 1


def test_dtensor_sequence_parallel_keeps_the_gathered_block_inputs(monkeypatch):
    """Korthikanti's SP stores the two blocks' inputs sharded (4h/t a token); a stack that saves the
    all-gathered tensors stores them whole (4h). Full recompute stores only the layer input either way."""
    h, tp = LLAMA8.d_model, 8
    kw = dict(tp=tp, sp=True, flash=True)
    sharded = memory.activation_bytes_per_token_layer(LLAMA8, 8192, recompute="none", **kw)
    whole = memory.activation_bytes_per_token_layer(LLAMA8, 8192, recompute="none", sp_gathered=True, **kw)
    assert whole - sharded == pytest.approx(4 * h * (1 - 1 / tp))
    assert memory.activation_bytes_per_token_layer(LLAMA8, 8192, recompute="full", sp_gathered=True, **kw) == \
        memory.activation_bytes_per_token_layer(LLAMA8, 8192, recompute="full", **kw)
    # torchtitan full recompute: the rebuilt layer holds the gathered inputs on top of the stored layer inputs
    L = Layout(tp=8, pp=1, dp=1, micro_batch=1, global_batch=1, seq_len=8192, zero=1, recompute="full")
    tt = StackSpec(framework="torchtitan", compile=True)
    assert stack_constants(tt, "hopper")["sp_saves_gathered_inputs"] is True
    with_gathered = _acts(L, tt, LLAMA8)
    import megacluster.estimate as est
    plain = dict(stack_constants(tt, "hopper"), sp_saves_gathered_inputs=False)
    monkeypatch.setattr(est, "stack_constants", lambda stack, gen: plain)
    without = _acts(L, tt, LLAMA8)
    assert with_gathered - without == pytest.approx(8192 * 4 * h * (1 - 1 / tp), rel=1e-9)


def test_zero3_buffers_hold_the_output_layer_unit_with_its_gradient_by_hand():
    """FSDP: at the output layer's backward its whole bf16 weight, its bf16 gradient and the fp32 reduce copy
    (torchtitan reduces in fp32) are live, with the last layer's weights prefetched; for Llama 3.1 8B the
    vocabulary matrix (128256 x 4096 = 525M) is a bigger unit than a layer (218M)."""
    stack = StackSpec(framework="torchtitan")
    L = Layout(dp=8, global_batch=8, micro_batch=1, seq_len=8192, zero=3)
    c = stack_constants(stack, "hopper")
    m = _mem(L, stack)
    h, V = LLAMA8.d_model, LLAMA8.vocab
    layer = LLAMA8.params_dense_layers / LLAMA8.n_layers
    act_msg = 8192 * h * 2.0
    want = 4 * act_msg + 2 * layer + V * h * (2 + 2 + 4) + c["reserved_gib"] * 2 ** 30
    assert m["m_buffers"] == pytest.approx(want, rel=1e-12)
    # ZeRO-1 keeps whole weights: no gathered unit
    m1 = _mem(L.model_copy(update={"zero": 1}), stack)
    assert m1["m_buffers"] == pytest.approx(4 * act_msg + c["reserved_gib"] * 2 ** 30, rel=1e-12)


def test_dp_replicate_shards_state_over_one_replica_and_all_reduces_across_replicas():
    """HSDP: 64 data ranks as 8 replicas of 8-rank shard groups keep 8x the sharded state of full sharding;
    each shard group gathers as 8 GPUs alone would, and one all-reduce of the gradient shard crosses replicas."""
    stack = StackSpec(framework="torchtitan")
    full = Layout(dp=64, global_batch=64, micro_batch=1, seq_len=8192, zero=3)
    hsdp = full.model_copy(update={"dp_replicate": 8})
    a, b = _mem(full, stack), _mem(hsdp, stack)
    assert b["m_optimizer"] == pytest.approx(8 * a["m_optimizer"], rel=1e-12)
    assert b["m_gradients"] == pytest.approx(8 * a["m_gradients"], rel=1e-12)
    # comm: the 8-rank shard group's gathers as on 8 GPUs alone, plus one all-reduce of the fp32 gradient
    # shard over the 8 replicas, one per node
    from megacluster.physics import comm
    alone = _mem(Layout(dp=8, global_batch=8, micro_batch=1, seq_len=8192, zero=3), stack)
    shard_bytes = a["params_per_gpu"] * 4 / 8
    t_rep = float(comm.allreduce_time(cluster(64), shard_bytes, 8, 1, 64))
    assert b["t_dp_comm_total"] == pytest.approx(alone["t_dp_comm_total"] + t_rep, rel=1e-9)
    # dp_replicate 1 is the default, to the byte
    assert _mem(full.model_copy(update={"dp_replicate": 1}), stack) == a
    # replicas of ZeRO-1 state: the optimizer shards over dp / dp_replicate ranks
    z1 = full.model_copy(update={"zero": 1})
    assert _mem(z1.model_copy(update={"dp_replicate": 4}), stack)["m_optimizer"] == pytest.approx(
        4 * _mem(z1, stack)["m_optimizer"], rel=1e-12)
    assert "rep8" in hsdp.label()


@pytest.mark.parametrize("update, match", [({"zero": 0, "dp_replicate": 2}, "zero 0 shards nothing"),
                                           ({"zero": 3, "dp_replicate": 3}, "must divide dp=8")])
def test_dp_replicate_that_cannot_run_is_one_line(update, match):
    from megacluster.errors import UserError
    L = Layout(dp=8, global_batch=8, seq_len=8192, **update)
    with pytest.raises(UserError, match=match):
        estimate(LLAMA8, cluster(8), L)


def test_multi_token_prediction_adds_a_layer_to_the_split_and_a_head_pass_to_the_last_stage():
    """DeepSeek-V3's MTP module (one layer like the model's, a 2h x h projection, the shared output head run
    again) costs time and memory but is outside the model FLOPs; without it the step is the model's alone."""
    from megacluster import catalog
    from megacluster.catalog.hf import model_from_file
    from pathlib import Path

    ds = catalog.model("deepseek-v3")
    assert ds.mtp_layers == 1
    assert model_from_file(Path(__file__).parent / "data" / "hf" / "DeepSeek-V3" / "config.json").mtp_layers == 1
    plain = ds.model_copy(update={"mtp_layers": 0})
    L = Layout(pp=16, dp=8, ep=8, micro_batch=1, global_batch=64, seq_len=4096, zero=1, recompute="selective")
    cl = cluster(L.n_gpus)
    a = estimate_arrays(plain, cl, StackSpec(), layout_arrays(L))
    b = estimate_arrays(ds, cl, StackSpec(), layout_arrays(L))
    assert float(b["step_time_s"]) > float(a["step_time_s"])
    assert float(b["t_output_layer"]) > float(a["t_output_layer"])
    assert float(b["model_flops_per_token"]) == float(a["model_flops_per_token"])
    assert float(b["m_total"]) > float(a["m_total"])


def test_dualpipe_holds_two_stages_and_runs_half_the_head_per_micro_batch():
    """DeepSeek's DualPipe: rank i holds stages i and p-1-i (two copies of the parameters, V3 report Table 2) and
    runs one of them per micro-batch, so the rank with the output head carries half of it per micro-batch.
    DualPipeV (PyTorch's ScheduleDualPipeV, what the runtime runs): one copy, and rank 0 runs its first and its
    last chunk for every micro-batch: the whole head."""
    from megacluster import catalog

    ds = catalog.model("deepseek-v3")
    L = Layout(pp=16, dp=8, ep=8, micro_batch=1, global_batch=64, seq_len=4096, zero=1, recompute="selective")
    cl = cluster(L.n_gpus)
    dual = estimate_arrays(ds, cl, StackSpec(framework="hai-llm"), layout_arrays(L))
    vee = estimate_arrays(ds, cl, StackSpec(framework="hai-llm", schedule="dualpipe-v"), layout_arrays(L))
    assert float(dual["params_per_gpu"]) == pytest.approx(2.0 * float(vee["params_per_gpu"]))
    assert float(dual["t_output_layer"]) == pytest.approx(0.5 * float(vee["t_output_layer"]))
    assert float(dual["m_weights"]) == pytest.approx(2.0 * float(vee["m_weights"]))
