"""Reading a plan file for the runtime (no torch here), through :func:`megacluster.plan_file.load_plan`.

The runtime takes the plan's model and layout and the GPU it was planned for (used for the peak and the
prediction when this run is on that GPU); layout flags on the command line override the plan's fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..specs import ModelSpec, StackSpec


@dataclass
class RunPlan:
    """What the runtime takes from a plan."""

    model: ModelSpec
    gpu: str | None = None
    gpus: int | None = None
    fabric: str | None = None
    layout: dict = field(default_factory=dict)
    stack: StackSpec | None = None
    schedule: str = "1f1b"   # the stack's pipeline schedule as the step model names it (stacks.yaml)


def read_plan(path: str | Path) -> RunPlan:
    """The plan in ``path``; malformed plans raise :class:`~megacluster.errors.UserError` (one line)."""
    from ..plan_file import load_plan

    p = load_plan(path)
    schedule = "1f1b"
    if p.stack is not None:
        from ..estimate import stack_constants

        schedule = stack_constants(p.stack, p.cluster.gpu.generation).get("schedule", "1f1b")
    return RunPlan(model=p.model, gpu=p.cluster.gpu.id, gpus=p.cluster.n_gpus, fabric=p.cluster.fabric.id,
                   layout=p.layout.model_dump(), stack=p.stack, schedule=schedule)


#: layout degrees the fit may shrink, in the order they are kept (pipeline first: it is what a plan's
#: layout is most about; the data-parallel degree takes the processes that are left)
_KEEP_ORDER = ("pp", "tp", "cp")


def _largest_divisor(n: int, at_most: int, ok) -> int:
    """The largest d <= at_most that divides n and passes ok(d) (1 always qualifies)."""
    return next(d for d in range(max(1, min(n, at_most)), 0, -1) if n % d == 0 and (d == 1 or ok(d)))


def _degree_ok(key: str, d: int, spec: ModelSpec, seq_len: int) -> bool:
    if key == "pp":
        return d <= spec.n_layers
    if key == "tp":
        return not any(n % d for n in (spec.n_heads, spec.kv_heads, spec.ffn_hidden))
    if key == "cp":
        return seq_len % (2 * d) == 0      # the ring attention's load-balanced split: 2 chunks per rank
    return True


def fit_layout(lay: dict, spec: ModelSpec, world: int, given: set[str], scaled_width: float | None = None,
               pipeline_multiple: bool = True) -> tuple[dict, list[str]]:
    """A plan's layout fitted to ``world`` processes and to a (scaled-down) model: (layout fields, changes).

    Fields named in ``given`` (flags on the command line) are never changed. The others change only where
    they no longer fit: the parallel degrees are cut to divide ``world`` (pp, then tp, then cp are kept as
    large as divides and fits the model; dp takes the rest), vp to at most layers / pp, ep to what divides
    the experts and the HSDP shard group dp x cp / dp_replicate, dp_replicate to the largest divisor of the new
    dp at most the plan's; the global batch keeps the plan's sequences per data-parallel rank and is raised
    to a multiple of pp micro-batches when pipelining (``pipeline_multiple``; torch's 1F1B needs at least pp,
    the interleaved schedules a multiple); ``scaled_width`` (new d_model / planned d_model) scales the
    sequence length with the width, which keeps attention's share of the FLOPs (s / 6d) that of the plan.
    Each change is one ``"name old -> new"`` string."""
    old = dict(lay)
    new = dict(lay)
    if scaled_width and "seq_len" not in given and new.get("seq_len"):
        s = new["seq_len"]
        new["seq_len"] = min(s, max(64, int(s * scaled_width) // 64 * 64))
    if "seq_len" not in given and new.get("seq_len", 0) > spec.seq_len:
        new["seq_len"] = spec.seq_len
    deg = {k: new.get(k, 1) for k in ("tp", "pp", "dp", "cp")}
    valid = all(_degree_ok(k, deg[k], spec, new.get("seq_len", 1)) for k in _KEEP_ORDER if deg[k] > 1)
    if deg["tp"] * deg["pp"] * deg["dp"] * deg["cp"] != world or not valid:
        fixed = 1
        for k in ("tp", "pp", "dp", "cp"):
            if k in given:
                fixed *= deg[k]
        if world % fixed == 0:
            rem = world // fixed
            for k in _KEEP_ORDER:
                if k not in given:
                    deg[k] = _largest_divisor(rem, deg[k], lambda d, k=k: _degree_ok(k, d, spec,
                                                                                   new.get("seq_len", 1)))
                    rem //= deg[k]
            if "dp" not in given:
                deg["dp"] = rem
            new.update(deg)
    pp, dp, cp = new.get("pp", 1), new.get("dp", 1), new.get("cp", 1)
    if "vp" not in given:
        vp = new.get("vp", 1)
        new["vp"] = 1 if pp == 1 else max(1, min(vp, spec.n_layers // pp))
    if "dp_replicate" not in given and new.get("dp_replicate", 1) > 1:
        ep_given = new.get("ep", 1) if "ep" in given else 1
        new["dp_replicate"] = _largest_divisor(dp, new["dp_replicate"],
                                               lambda r: (dp * cp // r) % ep_given == 0)
    rep = new.get("dp_replicate", 1)
    if "ep" not in given:
        n_exp = spec.moe.n_experts if spec.moe else 1
        new["ep"] = _largest_divisor(math.gcd(n_exp, max(1, dp * cp // rep)), new.get("ep", 1), lambda d: True)
    if "global_batch" not in given and old.get("dp") and new.get("dp") != old.get("dp") \
            and old.get("global_batch"):
        per_rank = max(1, old["global_batch"] // old["dp"])
        new["global_batch"] = per_rank * dp
    mb = new.get("micro_batch", 1)
    if "micro_batch" not in given and new.get("global_batch") and new["global_batch"] < dp * mb:
        new["micro_batch"] = mb = max(1, new["global_batch"] // dp)
    if pp > 1 and "global_batch" not in given and new.get("global_batch"):
        n_micro = max(1, new["global_batch"] // (dp * mb))
        unit = pp if (pipeline_multiple or n_micro < pp) else 1
        n_micro = -(-n_micro // unit) * unit
        new["global_batch"] = n_micro * dp * mb
    changes = [f"{k.replace('_', ' ')} {old.get(k, 1)} -> {new[k]}" for k in
               ("tp", "pp", "dp", "cp", "ep", "vp", "dp_replicate", "seq_len", "micro_batch", "global_batch")
               if k in new and old.get(k, 1) != new[k] and k not in given]
    return new, changes
