"""MFU of the training runtime on one GPU: a ~1B-parameter Llama (Llama 3.2 1B shape) in bf16 with torch.compile.

    python benchmarks/gpu_train.py                      # Llama 3.2 1B, seq 2048, micro-batch 4, 30 steps
    python benchmarks/gpu_train.py --micro-batch 8 --recompute selective
    python benchmarks/gpu_train.py --smoke              # the same code path on CPU with a tiny model
    megacluster calibrate --out hw.yaml && python benchmarks/gpu_train.py --hardware hw.yaml
                                                        # predicted from this GPU's measured profile (issue 17)

Prints megacluster's prediction, the measured medians over the steps after the first five (compilation and
warm-up) and one Markdown row for benchmarks/RESULTS.md. MFU counts model FLOPs with the planner's convention
(megacluster.physics.flops.model_flops_per_token) against the catalog's dense bf16 peak of the detected GPU.
Target (issue 6): at least 40% MFU on an H100 (llm.c and nanochat report 38-46% at this scale).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama3.2-1b")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--recompute", default="none", choices=["none", "selective", "full"])
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="tiny model on CPU (no GPU needed), compile via aot_eager")
    ap.add_argument("--hardware", help="hardware profile from `megacluster calibrate`: predict from the measured "
                                       "device instead of the catalog's")
    args = ap.parse_args(argv)

    import torch

    from megacluster import catalog
    from megacluster.runtime.config import TINY, TrainConfig
    from megacluster.runtime.train import run
    from megacluster.specs import Layout

    if args.smoke:
        spec, seq, device, precision, backend, steps = TINY, 64, "cpu", "bf16", "aot_eager", 8
    else:
        if not torch.cuda.is_available():
            print("no CUDA device: this benchmark measures a GPU (use --smoke for the CPU code path)",
                  file=sys.stderr)
            return 2
        spec, seq, device, precision, backend, steps = (catalog.model(args.model), args.seq_len, "cuda", "bf16",
                                                        "inductor", args.steps)
    layout = Layout(tp=1, dp=1, micro_batch=args.micro_batch, global_batch=args.micro_batch * args.grad_accum,
                    seq_len=seq, recompute=args.recompute, zero=3, precision="bf16")
    cfg = TrainConfig(model=spec, layout=layout, precision=precision, compile=not args.no_compile,
                      compile_backend=backend, steps=steps, lr=3e-4, warmup=5, device=device, log_every=5,
                      warmup_steps_excluded=5 if steps > 5 else 1, hardware=args.hardware)
    from megacluster.errors import UserError

    try:
        res = run(cfg)
    except UserError as e:          # a bad --hardware file or an impossible layout: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        return 2
    m = res["measured"]
    dev = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run)"
    cmd = "python benchmarks/gpu_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    pred = res["prediction"]
    row = (f"| {datetime.date.today()} | {dev} | {spec.name}, seq {seq}, mb {args.micro_batch}, "
           f"recompute {args.recompute}, {'compile' if not args.no_compile else 'eager'} | "
           f"{m['tokens_per_s_per_device']:,.0f} | {m['tflops_per_device']:.1f} | {m['mfu']:.1%} | "
           f"{pred['mfu']:.1%} | {m['memory_gib']:.1f} | `{cmd.strip()}` |" if pred else
           f"| {datetime.date.today()} | {dev} | {spec.name} | {m['tokens_per_s_per_device']:,.0f} | "
           f"{m['tflops_per_device']:.3g} | {m['mfu']:.1%} | - | {m['memory_gib']:.2f} | `{cmd.strip()}` |")
    ratio = pred["step_time_s"] / m["step_time_s"] if pred and m.get("step_time_s") else None
    print(json.dumps({"device": dev, "measured": m, "predicted_mfu": pred["mfu"] if pred else None,
                      "predicted_step_time_s": pred["step_time_s"] if pred else None,
                      "predicted_over_measured_step": ratio, "prediction_note": res.get("prediction_note")}))
    print("RESULTS.md row:")
    print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
