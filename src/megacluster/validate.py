"""Hold the step model to published, measured training runs (``catalog/data/runs.yaml``)."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, ValidationError

from . import catalog
from .cluster import make_cluster
from .errors import UserError, short
from .layout_check import layout_problems
from .estimate import RECOMPUTE, estimate, estimate_arrays, stack_constants
from .physics.memory import GIB
from .specs import Layout, MLASpec, MoESpec, ModelSpec, StackSpec


class RunResult(BaseModel):
    id: str
    gpu: str
    generation: str
    framework: str
    n_gpus: int
    layout: str
    reference: float
    predicted: float
    error: float
    micro_batch: int
    fits: bool
    memory_gib: float
    memory_reference_gib: Optional[float] = None
    memory_error: Optional[float] = None
    note: Optional[str] = None           # how the run was read where its spec needed interpreting


class SkippedRun(BaseModel):
    """A run the step model cannot predict, and why (one line)."""

    id: str
    reason: str


# other names of the MLP kinds the step model knows; GeGLU costs what SwiGLU does (three matrices, a gated
# elementwise activation)
MLP_NAMES = {"silu": "swiglu", "swish": "swiglu", "swish-glu": "swiglu", "geglu": "swiglu", "gated-gelu": "swiglu",
             "relu2": "squared-relu", "relu-squared": "squared-relu", "sqrelu": "squared-relu",
             "gelu-new": "gelu", "gelu-tanh": "gelu", "gelu-pytorch-tanh": "gelu"}
# the stack of a run whose framework the catalog does not know: PyTorch FSDP (torchtitan's constants) where
# the run shards weights (ZeRO-3 / FSDP: its weight gathers overlap compute there), else Megatron
DEFAULT_STACK = "megatron"
DEFAULT_FSDP_STACK = "torchtitan"
# precision names of runs files: (the step model's precision, the fp8 scaling recipe)
PRECISIONS = {"bf16": ("bf16", None), "fp16": ("fp16", None), "fp8": ("fp8", None),
              "mxfp8": ("fp8", "mxfp8"), "fp8-delayed": ("fp8", "delayed"), "fp8-tensorwise": ("fp8", "tensorwise"),
              "fp8-rowwise": ("fp8", "rowwise"), "fp8-blockwise": ("fp8", "blockwise"),
              "fp8-current": ("fp8", "tensorwise")}


def model_from_run(run: dict) -> ModelSpec:
    """The run's model: the catalog entry of the same name where one exists (it carries shapes the run
    leaves out, such as MLA ranks), else the run's own shape with standard defaults (FFN 4h, MHA,
    GPT vocabulary 51,200)."""
    md = run["model"]
    cid = md["name"].lower().replace(" ", "-")
    if md.get("moe"):
        try:
            return catalog.model(cid)
        except UserError:
            pass
    moe = None
    if md.get("moe"):
        mo = md["moe"]

        def first(*keys, default=None):
            return next((mo[k] for k in keys if mo.get(k) is not None), default)

        moe = MoESpec(n_experts=first("routed_experts", "n_experts", "num_experts", "experts"),
                      top_k=first("top_k", "experts_per_token", "num_experts_per_tok"),
                      expert_ffn_hidden=first("expert_ffn_hidden", "moe_ffn_hidden", default=md.get("ffn_hidden")),
                      n_shared_experts=first("shared_experts", "n_shared_experts", default=0),
                      n_dense_layers=first("dense_layers", "n_dense_layers", default=0))
    h = md["d_model"]
    mlp = str(md.get("mlp") or "gelu").strip().lower().replace("_", "-")
    mlp = MLP_NAMES.get(mlp, mlp)
    mla = _mla(md)
    return ModelSpec(name=md["name"], n_layers=md["n_layers"], d_model=h, n_heads=md["n_heads"],
                     n_kv_heads=None if mla else md.get("n_kv_heads"), ffn_hidden=md.get("ffn_hidden") or 4 * h,
                     vocab=md.get("vocab") or 51200, mlp=mlp, seq_len=md["seq_len"], moe=moe, mla=mla,
                     mtp_layers=md.get("mtp_layers") or md.get("num_nextn_predict_layers") or 0)


MLA_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def _mla(md: dict) -> Optional[MLASpec]:
    """Multi-head latent attention ranks of a run's model, given as an ``mla`` mapping or as Hugging Face
    config keys on the model itself (kv_lora_rank, ...); None for other attention."""
    src = md.get("mla") if isinstance(md.get("mla"), dict) else md
    if src.get("kv_lora_rank") is None:
        return None
    return MLASpec(**{k: src[k] for k in MLA_KEYS})


#: the keys a run's spec.stack may have (StackSpec's fields)
STACK_KEYS = tuple(StackSpec.model_fields)


def spec_parts(run: dict):
    """(model, cluster, stack) of a run's normalised ``spec``."""
    return _spec_parts_and_notes(run)[:3]


def _spec_parts_and_notes(run: dict):
    """(model, cluster, stack, notes): ``spec_parts`` and the notes on any stack or fabric substitution."""
    s = run["spec"]
    model = model_from_run(run)
    framework, fabric, notes = _stack_and_fabric(s)
    cluster = make_cluster(s["gpu"], s["n_gpus"], fabric=fabric, nic_gbps=s.get("nic_gbps"),
                           nics_per_node=s.get("nics_per_node"), gpus_per_node=s.get("gpus_per_node"))
    st = s.get("stack") or {}
    unknown = sorted(str(k) for k in st if k not in STACK_KEYS)
    if unknown:
        near = difflib.get_close_matches(unknown[0], STACK_KEYS, n=1)
        raise UserError(f"spec.stack has an unknown key {short(unknown[0])}"
                        + (f" (did you mean {near[0]}?)" if near else "") + f"; known: {', '.join(STACK_KEYS)}")
    if st.get("fp8_params") and _precision(s)[0] != "fp8":
        raise UserError("spec.stack.fp8_params is true but the run does not train in fp8; set precision fp8 or drop "
                        "fp8_params")
    # the run's other stack facts go to StackSpec as written (its field types and allowed values check them)
    given = {k: v for k, v in st.items() if k not in ("framework", "compile", "async_tp", "fp8_recipe")}
    stack = StackSpec(**given, framework=framework, compile=bool(st.get("compile", False)),
                      async_tp=bool(st.get("async_tp", False)), fp8_recipe=st.get("fp8_recipe") or _precision(s)[1])
    return model, cluster, stack, notes


def _stack_and_fabric(s: dict) -> tuple[str, Optional[str], list[str]]:
    """(stack id, fabric id or None, notes) of a spec. A framework the catalog does not know runs on a default
    stack (PyTorch FSDP's where the run shards weights, else Megatron's); a fabric it does not know is
    replaced by the GPU generation's usual one (None); each substitution adds a note."""
    notes = []
    fw = _written_framework(s)
    if _written_is_known(s):
        framework = catalog.stack_constants(fw)["id"]
    else:
        framework = DEFAULT_FSDP_STACK if int(s.get("zero") or 0) == 3 else DEFAULT_STACK
        notes.append(f"framework {short(fw)} is not in the catalog: {framework}'s constants used")
    fabric = s.get("fabric")
    if fabric and not catalog.has("fabrics", str(fabric)):
        notes.append(f"fabric {short(fabric)} is not in the catalog: the GPU generation's usual fabric used")
        fabric = None
    return framework, fabric, notes


def _written_is_known(s: dict) -> bool:
    """Whether the framework a spec names is a stack (id or alias) in the catalog."""
    return catalog.has("stacks", _written_framework(s))


def _written_framework(s: dict) -> str:
    """The framework a spec names (Megatron's where it names none)."""
    return str((s.get("stack") or {}).get("framework") or DEFAULT_STACK)


def _precision(s: dict) -> tuple[str, Optional[str]]:
    """(precision, fp8 recipe) of a spec's precision name: bf16, fp16, fp8 or a named fp8 variant."""
    name = str(s.get("precision") or "bf16").strip().lower()
    if name not in PRECISIONS:
        raise UserError(f"precision {short(s.get('precision'))} is not modelled (one of {', '.join(PRECISIONS)})")
    return PRECISIONS[name]


DEFAULT_TOKENS_PER_STEP = 2 ** 21   # where a run gives no global batch: 2M tokens, as its 8K-sequence sibling


def _global_batch(s: dict) -> int:
    if s.get("global_batch"):
        return int(s["global_batch"])
    per = s["dp"]
    return max(per, DEFAULT_TOKENS_PER_STEP // s["seq_len"] // per * per)


def _micro_batch_candidates(run: dict, pp_microbatches: str = "free") -> list[int]:
    """Micro-batches to try: the stated one; else every divisor of the local batch (up to 64), unless the
    run is pipelined on a stack whose default splits the local batch into pp micro-batches
    (``pp_microbatches: stages``, torchtitan): then that split is the only one the run could have used.
    (A local batch that pp does not divide could not have run with that default; such a run is searched
    like any other.)"""
    if pp_microbatches not in ("free", "stages"):
        raise ValueError(f"stack constant pp_microbatches must be free or stages, not {pp_microbatches!r}")
    s = dict(run["spec"])
    s["global_batch"] = _global_batch(s)
    if s.get("micro_batch"):
        return [int(s["micro_batch"])]
    per_dp = s["global_batch"] // s["dp"]
    pp = int(s.get("pp") or 1)
    if pp_microbatches == "stages" and pp > 1 and per_dp % pp == 0:
        return [per_dp // pp]
    return [b for b in range(1, min(per_dp, 64) + 1) if per_dp % b == 0]


def _block_recompute(part: dict, full: dict, mbs: np.ndarray, hbm_bytes: float, per_stage: float):
    """Whole layers of full recompute added to a lighter level until a micro-batch fits: for each micro-batch the
    fewest layers per stage (of ``per_stage``) whose memory, linear between ``part`` (none of them) and ``full``
    (all), is within ``hbm_bytes``; step time is linear the same way. None when even full recompute fits none."""
    shape = mbs.shape
    m0, m1 = (np.broadcast_to(a["m_total"], shape).astype(float) for a in (part, full))
    t0, t1 = (np.broadcast_to(a["step_time_s"], shape).astype(float) for a in (part, full))
    fits = np.broadcast_to(full["fits"], shape) & (m1 < m0)
    if not fits.any():
        return None
    whole = np.ceil(per_stage)
    layers = np.clip(np.ceil(np.where(fits, (m0 - hbm_bytes) / np.where(fits, m0 - m1, 1.0), 1.0) * whole), 0, whole)
    frac = layers / whole
    step = t0 + frac * (t1 - t0)
    tps = np.broadcast_to(part["tokens_per_s_per_gpu"], shape) * t0 / step
    return {"fits": fits, "layers": layers, "per_stage": whole, "tps": tps, "mem": m0 + frac * (m1 - m0)}


def _replicas(s: dict) -> int:
    """The spec's ``dp_replicate``, 1 where it is absent or null (0 is kept, so the layout check refuses it)."""
    return 1 if s.get("dp_replicate") is None else s["dp_replicate"]


def _recompute_assumed(s: dict) -> bool:
    """Whether the spec lists its recompute level among its assumptions (``spec.assumed``)."""
    return any(str(a).strip().lower().startswith("recompute") for a in (s.get("assumed") or []))


def predict_run(run: dict) -> RunResult:
    """Predict one run's tokens/s/GPU; the micro-batch is searched (best that fits) where the spec says so."""
    s = dict(run["spec"])
    s["global_batch"] = _global_batch(s)
    model, cluster, stack, notes = _spec_parts_and_notes(run)
    split = stack_constants(stack, cluster.gpu.generation).get("pp_microbatches", "free")
    mbs = np.array(_micro_batch_candidates(run, split))
    _check_layout(model, cluster, s, int(mbs[0]))
    base = dict(tp=s["tp"], pp=s["pp"], dp=s["dp"], cp=s.get("cp") or 1, ep=s.get("ep") or 1,
                vp=s.get("vp") or 1, global_batch=s["global_batch"], seq_len=s["seq_len"],
                sequence_parallel=bool(s.get("sequence_parallel")), recompute=RECOMPUTE[s["recompute"]],
                zero=s.get("zero") or 0, fp8=_precision(s)[0] == "fp8", dp_replicate=_replicas(s))
    arr = estimate_arrays(model, cluster, stack, {**base, "micro_batch": mbs})
    fits = np.broadcast_to(arr["fits"], mbs.shape)
    # an assumed recompute level with which no micro-batch fits cannot be what the run did: it ran, so it
    # recomputed more. Take the least that fits (noted): selective where nothing was recomputed; beyond
    # selective, whole layers of full recompute on top of it, as many as the memory needs (Megatron's
    # --recompute-method block --recompute-num-layers; memory and time are linear in the layers recomputed)
    block = None
    if not fits.any() and _recompute_assumed(s):
        if s["recompute"] == "none":
            sel = estimate_arrays(model, cluster, stack, {**base, "micro_batch": mbs, "recompute": 1})
            if np.broadcast_to(sel["fits"], mbs.shape).any():
                notes.append("recompute selective: no micro-batch fits with the assumed none")
                s["recompute"], base["recompute"], arr = "selective", 1, sel
                fits = np.broadcast_to(arr["fits"], mbs.shape)
        if not fits.any() and s["recompute"] != "full":
            full = estimate_arrays(model, cluster, stack, {**base, "micro_batch": mbs, "recompute": 2})
            block = _block_recompute(arr, full, mbs, cluster.gpu.hbm_gib * GIB,
                                     float(model.n_layers + model.mtp_layers) / float(s["pp"]))
            if block is not None:
                fits = block["fits"]
    tps = np.broadcast_to(arr["tokens_per_s_per_gpu"], mbs.shape) if block is None else block["tps"]
    if s.get("vp", 1) and s.get("vp", 1) > 1:   # interleaving needs micro-batches to be a multiple of pp
        ok = (s["global_batch"] // (s["dp"] * mbs)) % s["pp"] == 0
        tps = np.where(ok, tps, -1.0)
    pick = np.where(fits, tps, tps - 1e12)       # prefer fitting layouts; else the best anyway (flagged)
    i = int(np.argmax(pick))
    layout = Layout(tp=s["tp"], pp=s["pp"], dp=s["dp"], cp=base["cp"], ep=base["ep"], vp=base["vp"],
                    micro_batch=int(mbs[i]), global_batch=s["global_batch"], seq_len=s["seq_len"],
                    sequence_parallel=base["sequence_parallel"], recompute=s["recompute"], zero=base["zero"],
                    dp_replicate=base["dp_replicate"],
                    precision=_precision(s)[0])
    est = estimate(model, cluster, layout, stack, check=False)
    predicted, memory, fit = est.tokens_per_s_per_gpu, est.memory_gib_per_gpu, est.fits
    if block is not None and block["fits"][i]:
        predicted, memory, fit = float(block["tps"][i]), float(block["mem"][i]) / GIB, True
        notes.append(f"recompute: full on {int(block['layers'][i])} of {block['per_stage']:g} layers per stage "
                     f"on top of {s['recompute']} (no micro-batch fits with the assumed {s['recompute']} alone)")
    ref = float(run["reference"]["tokens_per_s_per_gpu"])
    mem_ref = published_peak_memory_gib(run)
    # a framework the catalog does not know is reported (and grouped) under its own name
    written = _written_framework(s)
    label = stack.framework if _written_is_known(s) else f"{written} (as {stack.framework})"
    return RunResult(id=run["id"], gpu=s["gpu"], generation=cluster.gpu.generation, framework=label,
                     n_gpus=s["n_gpus"], layout=layout.label(), reference=ref,
                     predicted=predicted, error=predicted / ref - 1.0,
                     micro_batch=layout.micro_batch, fits=fit, memory_gib=memory,
                     memory_reference_gib=mem_ref,
                     memory_error=None if mem_ref is None else memory / mem_ref - 1.0,
                     note="; ".join(notes) or None)


def _check_layout(model: ModelSpec, cluster, s: dict, micro_batch: int) -> None:
    """A UserError with the first rule the run's layout breaks (:func:`megacluster.layout_check.layout_problems`:
    degrees that do not multiply to the GPU count, TP that does not divide the heads, more pipeline stages than
    layers, CP that does not divide the sequence, ...); such a run could not have run as written."""
    try:
        layout = Layout(tp=s["tp"], pp=s["pp"], dp=s["dp"], cp=s.get("cp") or 1, ep=s.get("ep") or 1,
                        vp=s.get("vp") or 1, micro_batch=micro_batch, global_batch=s["global_batch"],
                        seq_len=s["seq_len"], recompute=s["recompute"], zero=s.get("zero") or 0,
                        dp_replicate=_replicas(s), precision=_precision(s)[0])
    except ValidationError as e:
        raise UserError(catalog.validation_message(e, "layout")) from None
    probs = layout_problems(model, cluster, layout)
    if probs:
        raise UserError(f"layout {layout.label()} cannot run: {probs[0]}")


def published_peak_memory_gib(run: dict, key: str = "peak_memory_gib") -> Optional[float]:
    """The run's published peak memory per GPU (``measured.other.peak_memory_gib``), if it gives one.
    torchtitan's figures are the PyTorch allocator's peak reserved memory. ``key``: another figure of the same
    place (``peak_memory_gb``: what the out-of-set sources publish, of mixed kinds; benchmarks/memory_more.py)."""
    other = (run.get("measured") or {}).get("other") or {}
    v = other.get(key)
    return float(v) if isinstance(v, (int, float)) and v > 0 else None


# runs files kept in the catalog, by the name ``validate --runs`` takes: the team's published set (the project's
# copy of shared/validation/runs.yaml) and further published runs gathered by the project (runs_more.yaml)
RUN_SETS = {"published": "runs", "more": "runs_more"}


def load_runs(path: str | Path | None = None) -> list[dict]:
    """Runs from a runs file, or from one of the catalog's sets named in ``RUN_SETS`` (default: the
    published runs)."""
    name = str(path or "published")
    if path is None or (name.strip().lower() in RUN_SETS and not Path(path).exists()):
        data = catalog.load(RUN_SETS[name.strip().lower()])
    else:
        close = difflib.get_close_matches(name.strip().lower(), RUN_SETS, n=1, cutoff=0.5)
        hint = ((f"; did you mean the set {short(close[0])}?" if close else "") +
                f" (or name a set kept in the catalog: {', '.join(RUN_SETS)})")
        # non-finite numbers are refused run by run (the run is not predicted), not for the whole file
        data = catalog.read_yaml_or_json(path, "runs file", hint=hint, finite=False)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise UserError(f"{path}: expected a mapping with a 'runs' list (the format of runs.yaml)")
    return data["runs"]


def validate_runs(runs: list[dict], progress: Optional[Callable[[int, int], None]] = None) -> dict[str, Any]:
    """Predict every run; MAPE and worst error overall, by GPU generation and by framework.

    A run that cannot be predicted (an unknown GPU or fabric, a malformed spec, no reference) is listed under
    ``skipped`` with the reason, and the scores cover the others; if no run can be predicted, the first
    reason is raised as a :class:`UserError`. ``progress(runs done, runs)`` is called after each run."""
    results: list[RunResult] = []
    skipped: list[SkippedRun] = []
    for i, r in enumerate(runs):
        rid = str(r.get("id", f"#{i + 1}"))[:80] if isinstance(r, dict) else f"#{i + 1}"
        try:
            results.append(predict_run(_checked(r, rid)))
        except UserError as e:
            skipped.append(SkippedRun(id=rid, reason=str(e)))
        except ValidationError as e:
            skipped.append(SkippedRun(id=rid, reason=catalog.validation_message(e, "malformed run")))
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, IndexError) as e:
            # a shape the checks above let through; the run is left out, never the whole command
            first = str(e).splitlines()[0] if str(e) else ""
            skipped.append(SkippedRun(id=rid, reason=f"malformed run ({e.__class__.__name__}: {short(first, 100)})"))
        if progress is not None:
            progress(i + 1, len(runs))
    if not results:
        one = skipped[0]
        raise UserError(one.reason if len(runs) == 1 else f"no run could be predicted; run {one.id}: {one.reason}")
    from .uncertainty import validation_intervals    # each run's leave-family-out 80% interval, coverage

    return {"runs": results, "summary": summarise(results), "memory": summarise_memory(results),
            "skipped": skipped, "intervals": validation_intervals(runs, results)}


def _checked(run: Any, rid: str) -> dict:
    """The run if it has the mappings and the reference that validation needs, else a UserError."""
    if not isinstance(run, dict) or not isinstance(run.get("spec"), dict) or not isinstance(run.get("model"), dict):
        raise UserError(f"run {rid} needs 'model' and 'spec' mappings (the format of runs.yaml)")
    ref = run.get("reference")
    ref = ref.get("tokens_per_s_per_gpu") if isinstance(ref, dict) else None
    if isinstance(ref, bool) or not isinstance(ref, (int, float)) or not math.isfinite(ref) or ref <= 0:
        raise UserError(f"run {rid} needs a positive reference.tokens_per_s_per_gpu")
    _check_types(run, rid)
    return {**run, "spec": _filled_spec(run["spec"], run["model"], rid)}


# the type of every field validation reads: "int" (a whole number; true/false refused), "num", "str", "bool",
# "map"; fields not listed are not read. A value of the wrong type makes the run "not predicted", with why.
RUN_FIELDS = {
    "model": {"name": "str", "n_layers": "int", "d_model": "int", "n_heads": "int", "n_kv_heads": "int",
              "ffn_hidden": "int", "vocab": "int", "seq_len": "int", "mlp": "str", "moe": "map", "mla": "map",
              "mtp_layers": "int", "num_nextn_predict_layers": "int"},
    "spec": {"gpu": "str", "n_gpus": "int", "tp": "int", "pp": "int", "dp": "int", "cp": "int", "ep": "int",
             "vp": "int", "micro_batch": "int", "global_batch": "int", "seq_len": "int", "zero": "int",
             "dp_replicate": "int",
             "gpus_per_node": "int", "nics_per_node": "int", "nic_gbps": "num", "fabric": "str",
             "precision": "str", "stack": "map", "sequence_parallel": "bool"},
    "stack": {"framework": "str", "compile": "bool", "async_tp": "bool", "fp8_recipe": "str", "attention": "str",
              "schedule": "str", "grad_reduce_fp32": "bool", "fp8_params": "bool", "tp_overlap": "str",
              "dp_bucket_params": "int", "align_param_gather": "bool"},
    "measured": {"other": "map"},
}
MAX_RUN_INT = 10 ** 12       # no count in a run (GPUs, layers, vocabulary, batch, ...) comes near a trillion
_KIND_NAMES = {"int": "a whole number", "num": "a number", "str": "text", "bool": "true or false",
               "map": "a mapping of fields"}


def _type_ok(v: Any, kind: str) -> bool:
    if kind == "int":
        return not isinstance(v, bool) and (isinstance(v, int) or isinstance(v, float) and v.is_integer())
    if kind == "num":
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
    return isinstance(v, {"str": str, "bool": bool, "map": dict}[kind])


def _check_types(run: dict, rid: str) -> None:
    """A UserError naming the first field of the run that has the wrong type (null means "not given")."""
    parts = {"model": run["model"], "spec": run["spec"], "stack": run["spec"].get("stack"),
             "measured": run.get("measured")}
    for part, fields in RUN_FIELDS.items():
        d = parts[part]
        if d is None:
            continue
        where = "spec.stack" if part == "stack" else part
        if not isinstance(d, dict):
            raise UserError(f"run {rid}: {where} must be {_KIND_NAMES['map']}, got {short(d)}")
        for k, kind in fields.items():
            v = d.get(k)
            if v is None or (kind == "map" and v is False):        # `moe: false` is a dense model
                continue
            if not _type_ok(v, kind):
                raise UserError(f"run {rid}: {where}.{k} must be {_KIND_NAMES[kind]}, got {short(v)}")
            if kind == "int" and v < 0:
                raise UserError(f"run {rid}: {where}.{k} must not be negative, got {short(v)}")
            if kind == "int" and v > MAX_RUN_INT:
                raise UserError(f"run {rid}: {where}.{k} = {short(v)} is larger than any count in a real run "
                                f"(at most {MAX_RUN_INT:.0e})")
    moe = run["model"].get("moe")
    if isinstance(moe, dict):
        for k, v in moe.items():
            if v is not None and not _type_ok(v, "int"):
                raise UserError(f"run {rid}: model.moe.{k} must be {_KIND_NAMES['int']}, got {short(v)}")


RECOMPUTE_NAMES = {"none": "none", "no": "none", "off": "none", "false": "none", "selective": "selective",
                   "op": "selective", "attention": "selective", "full": "full", "block": "full", "uniform": "full",
                   "true": "full"}


def _filled_spec(s: dict, md: dict, rid: str) -> dict:
    """The spec with the fields a runs file may leave implicit filled in: unset degrees are 1, an unset DP is
    what the GPU count leaves (GPUs / (TP x PP x CP)), the sequence length may come from the model, an unset
    recompute is selective (the runs file's standard assumption); recompute names are normalised."""
    s = dict(s)
    for k in ("gpu", "n_gpus"):
        if not s.get(k):
            raise UserError(f"run {rid}: spec.{k} is required")
    for k in ("tp", "pp", "cp", "ep", "vp"):
        s[k] = int(s.get(k) or 1)
    if not s.get("dp"):
        s["dp"] = max(1, int(s["n_gpus"]) // (s["tp"] * s["pp"] * s["cp"]))
    s["seq_len"] = s.get("seq_len") or md.get("seq_len")
    if not s["seq_len"]:
        raise UserError(f"run {rid}: spec.seq_len (or model.seq_len) is required")
    rc = str(s.get("recompute") or "selective").strip().lower()
    if rc not in RECOMPUTE_NAMES:
        raise UserError(f"run {rid}: recompute {short(s.get('recompute'))} is not one of none, selective, full")
    s["recompute"] = RECOMPUTE_NAMES[rc]
    return s


def summarise_memory(results: list[RunResult]) -> Optional[dict[str, float]]:
    """MAPE and worst error of predicted memory per GPU over the runs that publish a peak (None if none)."""
    e = np.abs([r.memory_error for r in results if r.memory_error is not None])
    if not len(e):
        return None
    return {"n": int(len(e)), "mape": float(e.mean()), "max_abs_error": float(e.max())}


def summarise(results: list[RunResult]) -> dict[str, dict[str, float]]:
    def stats(rs):
        e = np.abs([r.error for r in rs])
        return {"n": len(rs), "mape": float(e.mean()), "max_abs_error": float(e.max())}

    out = {"all": stats(results)}
    for key in ("generation", "framework"):
        for v in sorted({getattr(r, key) for r in results}):
            out[f"{key}:{v}"] = stats([r for r in results if getattr(r, key) == v])
    return out
