"""Plan speed: wall time of a full layout search (``megacluster.search.search``) against the bars of issue 3.

    python benchmarks/plan_speed.py [--repeat N]

Prints, per case, the layouts evaluated, those that fit, the first (cold) and best of N wall times, and the
bar. Times exclude Python start-up and imports, include building the top-5 StepEstimates. Not a test: the
figures depend on the machine (the bars are for a 2-core machine).
"""

from __future__ import annotations

import os
import platform
import sys
import time

from rich.console import Console
from rich.table import Table

from megacluster import catalog
from megacluster.cluster import make_cluster
from megacluster.errors import UserError
from megacluster.search import layout_label, search
from megacluster.specs import ModelSpec


def _model(mid: str, inline: dict) -> ModelSpec:
    try:
        return catalog.model(mid)
    except UserError:          # catalog entry missing: the published shape, inline
        return ModelSpec(**inline)


GPT3 = dict(name="GPT-3 175B", n_layers=96, d_model=12288, n_heads=96, ffn_hidden=49152, vocab=50257,
            mlp="gelu", seq_len=2048)
LLAMA405 = dict(name="Llama 3.1 405B", n_layers=126, d_model=16384, n_heads=128, n_kv_heads=8, ffn_hidden=53248,
                vocab=128256, mlp="swiglu", seq_len=8192)
ONE_T = dict(name="GPT 1T", n_layers=128, d_model=25600, n_heads=160, ffn_hidden=102400, vocab=51200,
             mlp="gelu", seq_len=2048)

CASES = [
    ("GPT-3 175B, 1,024 H100, batch 1,536", "gpt3-175b", GPT3, 1024, {}, dict(global_batch=1536), 1.0),
    ("Llama 3.1 405B, 16,384 H100, batch 2,048 x 8K", "llama3.1-405b", LLAMA405, 16384, dict(fabric="roce"),
     dict(global_batch=2048, seq_len=8192), 2.0),
    ("1T dense, 100,000 H100, 4M tokens/step", "megatron-gpt-1t", ONE_T, 100_000, {}, {}, 5.0),
    ("1T dense, 100,000 H100, 16M tokens/step", "megatron-gpt-1t", ONE_T, 100_000, {},
     dict(tokens_per_step=16 * 2 ** 20), 5.0),
    ("Llama 3.1 405B, 16,384 H100, 128K seq (CP)", "llama3.1-405b", LLAMA405, 16384, dict(fabric="roce"),
     dict(tokens_per_step=16 * 2 ** 20, seq_len=131072), 2.0),
]


def main(argv: list[str]) -> int:
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 3
    console = Console(width=180)
    console.print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                  f"Python {platform.python_version()}")
    t = Table(title="Layout search speed")
    for c in ("case", "layouts", "fit", "cold s", f"best of {repeat} s", "bar s", "ok", "best layout", "MFU"):
        t.add_column(c, justify="left" if c in ("case", "best layout") else "right")
    ok_all = True
    for name, mid, inline, n, ckw, skw, bar in CASES:
        model = _model(mid, inline)
        cluster = make_cluster("h100-sxm", n, **ckw)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            r = search(model, cluster, **skw)
            times.append(time.perf_counter() - t0)
        ok = max(times) < bar
        ok_all &= ok
        t.add_row(name, f"{r.searched:,}", f"{r.feasible:,}", f"{times[0]:.3f}", f"{min(times):.3f}", f"{bar:g}",
                  "yes" if ok else "NO", layout_label(r.best.layout), f"{r.best.mfu:.1%}")
    console.print(t)
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
