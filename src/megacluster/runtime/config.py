"""The settings of one training run (no torch here, so that the CLI can build and check them cheaply)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..specs import Layout, ModelSpec, StackSpec

#: a small Llama-shaped model for smoke tests and CPU runs when no --model is given
TINY = ModelSpec(name="tiny-llama", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, ffn_hidden=192, vocab=256,
                 mlp="swiglu", seq_len=128,
                 source="runtime default for CPU runs (Llama architecture at toy size), not a published model")


@dataclass
class TrainConfig:
    """Everything ``megacluster.runtime.train.run`` needs. Learning rates are per step (AdamW)."""

    model: ModelSpec
    layout: Layout
    precision: str = "fp32"          # compute precision: bf16, fp16, fp32 or fp8 (fp8.py)
    fp8_recipe: str | None = None    # torchao float8 recipe when precision is fp8: tensorwise or rowwise
    schedule: str = "1f1b"           # pipeline schedule, as the step model names it (runtime/pipeline.py)
    changed: str | None = None       # what fitting the plan to this run changed (one line), if anything
    compile: bool = False
    compile_backend: str = "inductor"  # tests use aot_eager (no C++ code generation)
    steps: int = 100
    lr: float = 3e-3
    warmup: int = 10
    min_lr_ratio: float = 0.1        # cosine decay from lr to lr*min_lr_ratio at the last step
    weight_decay: float = 0.1
    clip: float = 1.0                # global gradient-norm clip (0: off)
    moe_aux: float = 0.01            # weight of the MoE load-balancing loss
    seed: int = 0
    data: str = "python"
    tokenizer: str = "byte"
    text_key: str = "text"
    checkpoint_dir: Path | None = None
    checkpoint_every: int = 0
    keep: int = 3
    resume: str | None = None        # None, "auto" or a checkpoint directory
    metrics: Path | None = None      # JSONL file
    log_every: int = 10
    gpu: str | None = None           # catalog GPU id (peak and prediction); autodetected on CUDA
    gpus: int | None = None          # GPUs to predict for (default: the processes of this run)
    fabric: str | None = None
    stack: StackSpec | None = None
    device: str = "auto"
    json: bool = False
    hardware: Path | None = None     # hardware profile (megacluster calibrate): predict for this machine
    warmup_steps_excluded: int = 2   # steps left out of the throughput summary (compilation, warm-up)
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """A JSON-ready record of the settings."""
        d = asdict(self)
        d["model"] = self.model.model_dump()
        d["layout"] = self.layout.model_dump()
        d["stack"] = self.stack.model_dump() if self.stack else None
        for k in ("checkpoint_dir", "metrics", "hardware"):
            d[k] = str(d[k]) if d[k] is not None else None
        return d
