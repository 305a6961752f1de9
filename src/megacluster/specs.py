"""Typed specifications: model, accelerator, node, fabric, cluster, software stack and layout.

Plain pydantic data. Units are in the field names (``_gib``, ``_gbps`` = gigabits/s, ``_gbs`` = gigabytes/s,
``_us`` = microseconds, ``_w`` = watts). Validation errors are turned into one-line messages by
:func:`megacluster.errors` users (the CLI).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import short
from .limits import MAX, MIN

Precision = Literal["bf16", "fp16", "fp8"]
Recompute = Literal["none", "selective", "full"]
# fp8 scaling recipes: per-tensor current scaling, per-row, delayed (amax history), per-block (DeepSeek-V3) and
# microscaling (MX, Blackwell); the stacks' constants in stacks.yaml are keyed by these names
FP8_RECIPES = ("tensorwise", "rowwise", "delayed", "blockwise", "mxfp8")
Mlp = Literal["gelu", "swiglu", "squared-relu", "relu"]


def _most(name: str) -> float:
    """The largest value megacluster accepts for a count or size (:mod:`megacluster.limits`)."""
    return MAX[name][0]


class _Spec(BaseModel):
    # NaN and infinities are refused in every float field; counts are bounded by what a real system could have
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_counts(cls, data):
        """``tp: true`` is not a degree and ``compile: "yes"`` not a switch: refuse true/false where a number is
        expected and anything but true/false where a switch is (pydantic's lax mode reads them as 1 and True)."""
        if isinstance(data, dict):
            for k, v in data.items():
                f = cls.model_fields.get(k) if isinstance(k, str) else None
                if f is None:
                    continue
                if isinstance(v, bool) and f.annotation in (int, Optional[int], float, Optional[float]):
                    raise ValueError(f"{k}: expected a number, got {v}")
                if f.annotation is bool and not isinstance(v, bool):
                    raise ValueError(f"{k}: expected true or false, got {short(v)}")
        return data


# --------------------------------------------------------------------------------------------- model
class MoESpec(_Spec):
    """Mixture-of-experts feed-forward layers."""

    n_experts: int = Field(gt=0, le=_most("n_experts"), description="routed experts per MoE layer")
    top_k: int = Field(gt=0, description="routed experts per token")
    expert_ffn_hidden: int = Field(gt=0, le=_most("expert_ffn_hidden"), description="hidden width of one routed expert")
    n_shared_experts: int = Field(0, ge=0, description="always-on shared experts (DeepSeek)")
    shared_ffn_hidden: int = Field(0, ge=0, description="hidden width of one shared expert (0: expert width)")
    n_dense_layers: int = Field(0, ge=0, description="leading layers with a dense FFN instead of MoE")
    moe_layer_freq: int = Field(1, ge=1, description="every k-th layer (after the dense ones) is MoE")


class MLASpec(_Spec):
    """Multi-head latent attention (DeepSeek-V2/V3): low-rank compressed queries and keys/values."""

    q_lora_rank: int = Field(gt=0)
    kv_lora_rank: int = Field(gt=0)
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)


class ModelSpec(_Spec):
    """A decoder-only transformer (dense or MoE). Counts are exact for the shapes given."""

    name: str
    n_layers: int = Field(gt=0, le=_most("n_layers"))
    d_model: int = Field(gt=0, le=_most("d_model"))
    n_heads: int = Field(gt=0, le=_most("n_heads"))
    n_kv_heads: Optional[int] = Field(None, gt=0, le=_most("n_kv_heads"),
                                      description="None: multi-head attention (= n_heads)")
    head_dim: Optional[int] = Field(None, gt=0, le=_most("head_dim"), description="None: d_model / n_heads")
    ffn_hidden: int = Field(gt=0, le=_most("ffn_hidden"), description="dense FFN hidden width")
    vocab: int = Field(gt=0, le=_most("vocab"))
    mlp: Mlp = "gelu"
    seq_len: int = Field(2048, gt=0, le=_most("seq_len"),
                         description="training context length of the published model")
    tied_embeddings: bool = False
    moe: Optional[MoESpec] = None
    mla: Optional[MLASpec] = None
    mtp_layers: int = Field(0, ge=0, le=16, description="multi-token-prediction modules trained beside the model "
                            "(DeepSeek-V3: 1): each adds one layer like the model's to the pipeline split and, "
                            "on the last stage, a 2h x h projection and another pass of the output layer and "
                            "loss; they are outside the model's parameter count and model FLOPs (MFU)")
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        if self.head_dim is None and self.mla is None and self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.kv_heads}")
        if self.moe and self.moe.top_k > self.moe.n_experts:
            raise ValueError("moe.top_k is larger than moe.n_experts")
        return self

    # ---- derived shapes
    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hd(self) -> int:
        """Head dimension (value head dimension for MLA)."""
        if self.mla:
            return self.mla.v_head_dim
        return self.head_dim or self.d_model // self.n_heads

    @property
    def gated(self) -> bool:
        return self.mlp == "swiglu"

    @property
    def n_moe_layers(self) -> int:
        if not self.moe:
            return 0
        rest = self.n_layers - self.moe.n_dense_layers
        return (rest + self.moe.moe_layer_freq - 1) // self.moe.moe_layer_freq

    @property
    def n_dense_ffn_layers(self) -> int:
        return self.n_layers - self.n_moe_layers

    # ---- parameter counts (norm weights and biases ignored: < 0.1%)
    @property
    def attn_params(self) -> int:
        """Parameters of one attention block (projections only)."""
        h = self.d_model
        if self.mla:
            m = self.mla
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            q = h * m.q_lora_rank + m.q_lora_rank * self.n_heads * qk
            kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * self.n_heads * (
                m.qk_nope_head_dim + m.v_head_dim)
            o = self.n_heads * m.v_head_dim * h
            return q + kv + o
        return h * self.hd * (2 * self.n_heads + 2 * self.kv_heads)

    def ffn_params(self, width: int) -> int:
        """Parameters of one FFN of hidden width ``width`` (3 matrices when gated, else 2)."""
        return (3 if self.gated else 2) * self.d_model * width

    @property
    def expert_params(self) -> int:
        return self.ffn_params(self.moe.expert_ffn_hidden) if self.moe else 0

    @property
    def shared_expert_params(self) -> int:
        if not self.moe or not self.moe.n_shared_experts:
            return 0
        w = self.moe.shared_ffn_hidden or self.moe.expert_ffn_hidden
        return self.moe.n_shared_experts * self.ffn_params(w)

    @property
    def embedding_params(self) -> int:
        """Input embedding plus (untied) output projection."""
        return self.vocab * self.d_model * (1 if self.tied_embeddings else 2)

    @property
    def params_dense_layers(self) -> int:
        """Parameters in all transformer layers except routed experts (attention, dense FFN, shared experts,
        router)."""
        p = self.n_layers * self.attn_params + self.n_dense_ffn_layers * self.ffn_params(self.ffn_hidden)
        if self.moe:
            p += self.n_moe_layers * (self.shared_expert_params + self.d_model * self.moe.n_experts)
        return p

    @property
    def params_experts(self) -> int:
        return self.n_moe_layers * self.moe.n_experts * self.expert_params if self.moe else 0

    @property
    def params_total(self) -> int:
        return self.params_dense_layers + self.params_experts + self.embedding_params

    @property
    def params_active(self) -> int:
        """Parameters touched by one token (top-k routed experts only)."""
        if not self.moe:
            return self.params_total
        return self.params_dense_layers + self.n_moe_layers * self.moe.top_k * self.expert_params + \
            self.embedding_params


# --------------------------------------------------------------------------------------------- hardware
class GPUSpec(_Spec):
    """One accelerator, from its data sheet, plus measured efficiency constants of this hardware."""

    id: str
    name: str
    generation: str = Field(description="ampere, hopper, blackwell, cdna3")
    peak_tflops: dict[str, float] = Field(description="dense (non-sparse) peak TFLOP/s by precision")
    hbm_gib: float = Field(gt=0, description="usable memory capacity, GiB")
    hbm_tbs: float = Field(gt=0, description="memory bandwidth, TB/s")
    nvlink_gbs: float = Field(ge=0, description="NVLink/xGMI bandwidth per GPU per direction, GB/s")
    nvlink_domain: Optional[int] = Field(None, gt=0, description="GPUs in one NVLink domain in the system this "
                                         "part ships in, where it is not the GPUs of one node (GB200 NVL72: 72)")
    tdp_w: float = Field(ge=0, description="board power, W (0: not known, a calibrated CPU)")
    price_usd: float = Field(ge=0)
    # efficiency of this hardware (fractions of the data-sheet peak), each with its source in the YAML
    gemm_efficiency: float = Field(gt=0, le=1, description="best sustained fraction of dense peak, large GEMM")
    gemm_efficiency_fp8: Optional[float] = Field(None, gt=0, le=1)
    sm_count: int = Field(gt=0, description="streaming multiprocessors (compute units): GEMM tiles per wave")
    gemm_tile: tuple[int, int] = Field((128, 256), description="output tile (rows, cols) of the library's "
                                       "large-GEMM kernels, for wave quantisation")
    gemm_k_overhead: float = Field(gt=0, description="K0, 16-bit: per-tile fill and epilogue time expressed "
                                   "as inner-dimension length; efficiency x K/(K+K0) (fp8: 2 K0)")
    gemm_launch_us: float = Field(0.0, ge=0, description="fixed time per GEMM kernel, microseconds")
    fp8_gemm_any_layout: bool = Field(False, description="fp8 GEMMs take operands in any layout, so an fp8 "
                                      "tensor needs no transposed copy (compute capability 10 and up)")
    attention_efficiency: float = Field(gt=0, le=1, description="causal flash-attention forward, long-sequence "
                                        "sustained fraction of 16-bit peak")
    attention_bwd_ratio: float = Field(1.0, gt=0, le=1.5, description="backward kernel rate / forward rate")
    overlap_compute_slowdown: float = Field(0.0, ge=0, description="compute time added per second of "
                                            "communication hidden behind it (kernels contend for SMs and HBM)")
    attention_half_seq: float = Field(0.0, ge=0, description="s0: attention rate x s/(s+s0) for s query "
                                      "tokens per kernel (0 = no length dependence)")
    hbm_efficiency: float = Field(gt=0, le=1, description="sustained fraction of HBM bandwidth (streams)")
    speed_spread: float = Field(0.0, ge=0, lt=0.5, description="relative standard deviation of the compute "
                                "speed of GPUs of this part in one cluster (a step waits for the slowest)")
    power_cap_w: Optional[float] = Field(None, gt=0, description="board power limit below TDP, if any")
    # measured by `megacluster calibrate` (None/0: the node defaults; catalog GPUs leave them unset)
    op_overhead_us: float = Field(0.0, ge=0, description="host time per eager op that does not hide behind "
                                  "device work, microseconds (a CPU runs its ops synchronously; 0 on GPUs)")
    intra_node_efficiency: Optional[float] = Field(None, gt=0, le=1, description="achieved fraction of "
                                                   "nvlink_gbs in collectives within a node (None: the node's)")
    intra_node_latency_us: Optional[float] = Field(None, ge=0, description="per-step latency of collectives "
                                                   "within a node, microseconds (None: the node's)")
    source: str = ""

    @property
    def half_precision(self) -> str:
        """The 16-bit format this chip trains in: bf16, or fp16 on chips without bf16 (V100)."""
        return "bf16" if "bf16" in self.peak_tflops else "fp16"

    def peak(self, precision: str) -> float:
        """Dense peak in FLOP/s for a precision. fp8 falls back to the 16-bit peak where the chip has none,
        and bf16 to fp16 on chips without bf16 (V100: 16-bit training runs in fp16 there)."""
        p = self.peak_tflops.get(precision) or self.peak_tflops.get("bf16") or self.peak_tflops["fp16"]
        return float(p) * 1e12

    @model_validator(mode="after")
    def _has_16_bit_peak(self) -> "GPUSpec":
        if not (self.peak_tflops.get("bf16") or self.peak_tflops.get("fp16")):
            raise ValueError("peak_tflops needs a bf16 or fp16 entry (the 16-bit peak MFU is measured against)")
        return self


class FabricTier(_Spec):
    name: str
    reach_gpus: int = Field(gt=0, description="GPUs reachable within this tier")
    oversubscription: float = Field(1.0, ge=1.0)
    latency_us: float = Field(ge=0, description="added one-way latency when a collective crosses this tier")


class FabricSpec(_Spec):
    """Scale-out network (between nodes)."""

    id: str
    name: str
    kind: Literal["infiniband", "roce", "ethernet"]
    efficiency: float = Field(gt=0, le=1, description="achieved fraction of NIC line rate in NCCL collectives")
    base_latency_us: float = Field(ge=0, description="NIC-to-NIC latency within a leaf")
    tiers: list[FabricTier] = Field(default_factory=list)
    source: str = ""


class NodeSpec(_Spec):
    """One server: GPUs behind one NVLink/NVSwitch domain plus NICs."""

    gpus_per_node: int = Field(8, gt=0, le=_most("gpus_per_node"))
    nvlink_domain: int = Field(8, gt=0, le=_most("nvlink_domain"),
                               description="GPUs in one NVLink domain (8 in HGX, 72 in NVL72)")
    nics_per_node: int = Field(8, gt=0, le=_most("nics_per_node"))
    nic_gbps: float = Field(400, ge=MIN["nic_gbps"][0], le=_most("nic_gbps"), description="line rate of one NIC, Gb/s")
    nvlink_efficiency: float = Field(0.8, gt=0, le=1, description="achieved fraction of NVLink in NCCL")
    nvlink_latency_us: float = Field(3.0, ge=0)


class ClusterSpec(_Spec):
    gpu: GPUSpec
    n_gpus: int = Field(gt=0, le=_most("n_gpus"))
    node: NodeSpec = NodeSpec()
    fabric: FabricSpec

    @property
    def nic_gbs_per_gpu(self) -> float:
        """Scale-out bandwidth available to one GPU, GB/s per direction, at the fabric's efficiency."""
        n = self.node
        return n.nics_per_node * n.nic_gbps / 8.0 / n.gpus_per_node * self.fabric.efficiency


# --------------------------------------------------------------------------------------------- software
class StackSpec(_Spec):
    """The software stack that runs the step: the framework and its features (the runs' ``spec.stack``)."""

    framework: str = "megatron"
    compile: bool = False
    async_tp: bool = False
    fp8_recipe: Optional[str] = None
    grad_reduce_fp32: Optional[bool] = Field(None, description="gradients accumulated and reduced in fp32 (True) "
                                             "or in 16 bits (False); None: the stack's default (Megatron-LM's "
                                             "pretrain script forces fp32 for bf16 unless --grad-reduce-in-bf16)")
    fp8_params: Optional[bool] = Field(None, description="weights kept in fp8 (NeMo/MLPerf FP8_PARAMS, Megatron "
                                       "--fp8-param-gather): with fp8 training the distributed optimizer's and "
                                       "ZeRO-3's parameter all-gathers move 1 byte per parameter, not 2, and the "
                                       "weights are not cast to fp8 for each micro-batch; None or False: 16-bit "
                                       "weights")
    schedule: Optional[Literal["1f1b", "dualpipe", "dualpipe-v", "zb-h1"]] = Field(
        None, description="the pipeline schedule the run used (physics/pipeline.py prices each); None: the "
        "stack's (stacks.yaml)")
    attention: Optional[Literal["flash", "unfused"]] = Field(
        None, description="the attention kernel the run used: flash (FlashAttention-class fused kernel) or "
        "unfused (s x s scores materialised); None: the stack's default on the GPU generation (e.g. Megatron-LM "
        "with --use-flash-attn on an A100 is flash, its 2021-22 code unfused)")
    tp_overlap: Optional[Literal["none", "chunked"]] = Field(
        None, description="the run's tensor-parallel communication overlap: chunked (collective matmul, e.g. "
        "Transformer Engine userbuffers) or none (every TP collective waits for its GEMM and the GEMM for it); "
        "None: the stack's")
    dp_bucket_params: Optional[int] = Field(
        None, gt=0, le=10 ** 13, description="parameters per data-parallel gradient bucket (Megatron-Core's "
        "DistributedDataParallelConfig.bucket_size): the last bucket's reduction stays exposed, and where the "
        "forward waits for each group's all-gather (align_param_gather) every group pays its latency; None: the "
        "stack's rule")
    align_param_gather: Optional[bool] = Field(
        None, description="Megatron-Core's align_param_gather, with nothing else starting the parameter "
        "all-gathers early (no overlap_param_gather_with_optimizer_step): only an interleaved pipeline schedule "
        "starts them, so without one (vp 1) each bucket group's all-gather runs in its module's forward "
        "pre-hook while the forward waits; None or False: each group prefetches the next")

    @model_validator(mode="after")
    def _one_tp_overlap(self) -> "StackSpec":
        if self.async_tp and self.tp_overlap == "none":
            raise ValueError("async_tp overlaps the TP collectives, tp_overlap none says nothing does: drop one")
        return self

    @field_validator("fp8_recipe")
    @classmethod
    def _known_recipe(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        name = v.strip().lower()
        if name not in FP8_RECIPES:
            raise ValueError(f"unknown fp8 recipe {v[:40]!r}; use one of {', '.join(FP8_RECIPES)}")
        return name


# --------------------------------------------------------------------------------------------- layout
class Layout(_Spec):
    """A parallel layout of one training job. Degrees multiply to the GPU count: tp*pp*dp*cp = GPUs.

    ``ep`` splits experts across the data-parallel x context-parallel ranks (it does not multiply the count).
    ``zero``: 0 plain DP, 1 optimizer sharded, 2 + gradients, 3 + weights (FSDP).
    """

    tp: int = Field(1, gt=0, le=_most("gpus"))
    pp: int = Field(1, gt=0, le=_most("gpus"))
    dp: int = Field(1, gt=0, le=_most("gpus"))
    cp: int = Field(1, gt=0, le=_most("gpus"))
    ep: int = Field(1, gt=0, le=_most("gpus"))
    vp: int = Field(1, gt=0, le=_most("n_layers"),
                    description="virtual pipeline stages per GPU (interleaved 1F1B when > 1)")
    micro_batch: int = Field(1, gt=0, le=_most("micro_batch"),
                             description="sequences per micro-batch per data-parallel rank")
    global_batch: int = Field(gt=0, le=_most("global_batch"), description="sequences per optimizer step")
    seq_len: int = Field(gt=0, le=_most("seq_len"))
    sequence_parallel: bool = True
    recompute: Recompute = "selective"
    zero: int = Field(1, ge=0, le=3)
    dp_replicate: int = Field(1, gt=0, le=_most("gpus"),
                              description="replicas of the ZeRO-sharded state (HSDP, MiCS partition groups, "
                              "Megatron's distributed-optimizer instances): the state shards over "
                              "dp*cp/dp_replicate ranks and the replicas all-reduce their gradient shards")
    precision: Precision = "bf16"

    @property
    def n_gpus(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def n_microbatches(self) -> int:
        return self.global_batch // (self.dp * self.micro_batch)

    def label(self) -> str:
        """Short text for a layout: ``TP8 PP16 DP128 vp2 mb1 selective Z1 bf16``."""
        parts = [f"TP{self.tp}", f"PP{self.pp}", f"DP{self.dp}"]
        parts += [f"{k}{v}" for k, v in (("CP", self.cp), ("EP", self.ep), ("vp", self.vp),
                                          ("rep", self.dp_replicate)) if v > 1]
        parts += [f"mb{self.micro_batch}", self.recompute, f"Z{self.zero}", self.precision]
        return " ".join(parts)
