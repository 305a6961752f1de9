"""The training loop: build, parallelize, (resume,) train, measure, checkpoint.

One call of :func:`run` per process; under ``torchrun`` every rank runs it. Rank 0 prints and writes the JSONL
metrics; all ranks take part in checkpoints.
"""

from __future__ import annotations

import contextlib
import math
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..errors import UserError
from ..jsonout import print_json
from . import metrics as M
from .checkpoint import Checkpointer
from .config import TrainConfig
from .data import build_data
from .model import Transformer, count_params
from .parallel import (check_layout, clip_grad_norm, init_distributed, make_mesh, parallelize, pipeline_schedule,
                       precision_dtype, uses_fsdp)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of ``step`` (0-based): linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(1, cfg.steps - cfg.warmup)
    frac = min(1.0, (step - cfg.warmup) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def predict(cfg: TrainConfig, gpu_id: str | None, n_gpus: int, device_type: str = "cuda"):
    """megacluster's prediction of one step of this run: (StepEstimate or None, a line saying what it is)."""
    if cfg.hardware:
        from ..calibrate.predict import predict_run

        return predict_run(cfg.hardware, cfg.model, cfg.layout, cfg.precision, n_gpus, torch.get_num_threads(),
                           gpu_id, cfg.compile, cfg.stack)
    if gpu_id is None:
        return None, ("prediction skipped: this run is on CPU, which the planner does not model without a "
                      "profile (calibrate it: `megacluster calibrate --out hw.yaml`, then --hardware hw.yaml; "
                      "or pass --gpu ID to see the prediction for that GPU)")
    if cfg.precision not in ("bf16", "fp16", "fp8"):
        return None, f"prediction skipped: the planner models bf16/fp16/fp8 training, this run is {cfg.precision}"
    from .pipeline import SCHEDULES

    row = SCHEDULES[cfg.schedule]
    if cfg.layout.pp > 1 and not row.priced:
        return None, (f"prediction skipped: the step model does not price the {cfg.schedule} pipeline schedule "
                      "(physics/pipeline.py prices 1f1b, interleaved 1f1b, dualpipe-v and zb-h1)")
    try:
        from ..cluster import make_cluster
        from ..estimate import estimate
    except ImportError as e:
        return None, f"prediction skipped: megacluster.estimate is not available ({e})"
    from ..specs import StackSpec

    # what this runtime is: torchtitan's stack (schedule 1f1b); a run on another schedule is priced with the
    # plan's stack (torchtitan's without a plan) and the schedule that ran (dualpipe runs as dualpipe-v)
    stack = StackSpec(framework="torchtitan", compile=cfg.compile)
    if cfg.layout.pp > 1 and row.prices != "1f1b":
        stack = (cfg.stack or stack).model_copy(update={"schedule": row.prices})
    layout = cfg.layout.model_copy(update={"precision": cfg.precision})
    try:
        est = estimate(cfg.model, make_cluster(gpu_id, n_gpus, cfg.fabric), layout, stack)
    except UserError as e:
        return None, f"prediction skipped: {e}"
    note = f"megacluster's prediction for {n_gpus} x {gpu_id}, stack {stack.framework}"
    if device_type != "cuda":
        note += (f", is for that GPU, not this machine ({device_type}): it does not compare with the measured "
                 "figures")
    return est, note


def summary_json(cfg: TrainConfig, records: list[dict], summary: dict, est, note: str, comparable: bool,
                 extra: dict) -> dict:
    """The one JSON object ``train --json`` prints: measured figures (medians of the steady steps), the
    layout, and the prediction (or null and the reason)."""
    predicted = None
    if est is not None:
        predicted = {"step_time_s": est.step_time_s, "tokens_per_s": est.tokens_per_s_per_gpu * est.n_gpus,
                     "mfu": est.mfu, "memory_gib": est.memory_gib_per_gpu,
                     "hardware": f"{est.n_gpus} x {est.gpu}", "comparable": comparable}
    out = {"steps": len(records),
           "loss_first": records[0]["loss"] if records else None,
           "loss_last": records[-1]["loss"] if records else None,
           "tokens_per_s": summary.get("tokens_per_s"), "step_time_s": summary.get("step_time_s"),
           "cpu_time_s": summary.get("cpu_time_s"),     # rank 0's CPU seconds per steady step (median)
           "mfu": summary.get("mfu"), "peak_memory_gib": summary.get("memory_gib"),
           "layout": {**cfg.layout.model_dump(mode="json"), "precision": cfg.precision,
                      "schedule": cfg.schedule if cfg.layout.pp > 1 else None},
           "model": cfg.model.model_dump(mode="json", exclude={"source"}), "changed": cfg.changed,
           "predicted": predicted, "predicted_reason": None if est is not None else note}
    if est is not None and not comparable:
        out["predicted_note"] = note
    out.update(extra)
    return out


class Reporter:
    """Console output of rank 0: a header, a progress bar on terminals, a line every ``log_every`` steps."""

    def __init__(self, cfg: TrainConfig, enabled: bool):
        from rich.console import Console

        self.enabled = enabled
        self.cfg = cfg
        self.console = Console(stderr=cfg.json, highlight=False, soft_wrap=True)
        self.progress = None

    def print(self, *args, **kw) -> None:
        if self.enabled:
            self.console.print(*args, **kw)

    def start(self, first: int, total: int) -> None:
        if not (self.enabled and self.console.is_terminal):
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.fields[info]}"), console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=first, info="")

    def step(self, rec: dict) -> None:
        if not self.enabled:
            return
        info = f"loss {rec['loss']:.4f}  {rec['tokens_per_s']:,.0f} tok/s"
        if self.progress is not None:
            self.progress.update(self.task, advance=1, info=info)
        if rec["step"] % self.cfg.log_every == 0 or rec["step"] == self.cfg.steps:
            mfu = f"  MFU {rec['mfu']:.1%}" if rec["mfu"] == rec["mfu"] else ""
            self.print(f"step {rec['step']:>6}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
                       f"gnorm {rec['grad_norm']:.3f}  {rec['tokens_per_s']:,.0f} tok/s  "
                       f"{rec['tflops_per_device']:.3g} TFLOP/s/dev{mfu}")

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _header(rep: Reporter, cfg: TrainConfig, d, n_params: int, peak: M.Peak, note: str, est) -> None:
    L = cfg.layout
    s = cfg.model
    moe = f", MoE {s.moe.n_experts}x top-{s.moe.top_k}" if s.moe else ""
    rep.print(f"[bold]model[/] {s.name}: {n_params / 1e6:,.2f}M parameters, {s.n_layers} layers, d_model "
              f"{s.d_model}, {s.n_heads} heads ({s.kv_heads} kv), ffn {s.ffn_hidden}, vocab {s.vocab}{moe}")
    from .pipeline import torch_class_name

    stages = f", {L.vp} stages per rank" if L.vp > 1 else ""
    pp = (f" x pp {L.pp} ({cfg.schedule}: {torch_class_name(cfg.schedule, L.vp)}{stages}, {L.n_microbatches} "
          f"micro-batches)" if L.pp > 1 else "")
    sp = " (sequence parallel)" if L.tp > 1 and L.sequence_parallel else ""
    hsdp = (f" (HSDP: {L.dp_replicate} replicas x {L.dp * L.cp // L.dp_replicate}-rank shard groups)"
            if L.dp_replicate > 1 else "")
    rep.print(f"[bold]layout[/] dp {L.dp}{hsdp} x tp {L.tp}{sp}{pp}"
              f", micro-batch {L.micro_batch}, global batch {L.global_batch} x {L.seq_len} tokens, recompute "
              f"{L.recompute}, zero {L.zero}, {cfg.precision}{', compiled' if cfg.compile else ''}; "
              f"{d.world} process(es) on {d.device.type}")
    if cfg.changed:
        rep.print(f"[yellow]fitted the plan to this run: {cfg.changed}[/]")
    if L.cp > 1 or L.ep > 1:  # context_parallel.py, moe.py
        rep.print(f"[bold]context/expert parallel[/] cp {L.cp} (ring attention), ep {L.ep} (all-to-all experts)")
    rep.print(f"[bold]peak[/] {peak.flops / 1e12:.4g} TFLOP/s per device ({peak.source})")
    rep.print(note if est is None else f"[bold]{note}[/]")
    if est is not None:
        rep.print(f"  step {est.step_time_s:.4g} s, {est.tokens_per_s_per_gpu:,.0f} tokens/s/GPU, "
                  f"{est.tflops_per_gpu:.4g} TFLOP/s/GPU, MFU {est.mfu:.1%}, memory {est.memory_gib_per_gpu:.3g} "
                  f"GiB/GPU{'' if est.fits else ' (does NOT fit)'}")


def _comparison(rep: Reporter, summary: dict, est) -> None:
    """The measured medians beside the prediction (only the measured ones when there is nothing to compare)."""
    from rich.table import Table

    cols = ("", "measured", "predicted", "measured / predicted") if est is not None else ("", "measured")
    t = Table(title=f"measured{' vs predicted' if est is not None else ''} (median of steady steps)")
    for c in cols:
        t.add_column(c, justify="right" if c else "left")
    rows = [("tokens/s per device", "tokens_per_s_per_device", "tokens_per_s_per_gpu", "{:,.0f}"),
            ("TFLOP/s per device", "tflops_per_device", "tflops_per_gpu", "{:.4g}"),
            ("MFU", "mfu", "mfu", "{:.1%}"), ("step time, s", "step_time_s", "step_time_s", "{:.4g}"),
            ("memory, GiB", "memory_gib", "memory_gib_per_gpu", "{:.3g}")]
    ok = lambda v: v is not None and v == v  # noqa: E731 (not NaN)
    for label, mk, pk, fmt in rows:
        m = summary.get(mk)
        if est is None:
            t.add_row(label, fmt.format(m) if ok(m) else "-")
            continue
        p = getattr(est, pk)
        ratio = f"{m / p:.2f}" if ok(m) and ok(p) and p else "-"
        t.add_row(label, fmt.format(m) if ok(m) else "-", fmt.format(p) if ok(p) else "-", ratio)
    rep.print(t)


def run(cfg: TrainConfig) -> dict:
    """Train as ``cfg`` says; returns the summary (on every rank; printed by rank 0)."""
    d = init_distributed(cfg.device)
    try:
        out = _run(cfg, d)
        if dist.is_initialized():
            dist.barrier()   # no rank tears the group down while another is still in its last collective
        return out
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _run(cfg: TrainConfig, d) -> dict:
    L = cfg.layout
    check_layout(L, cfg.model, d.world, cfg.schedule)
    from . import fp8
    cfg, fp8_note = fp8.resolve(cfg, d.device)  # fp8 on GPUs that have it, else bf16 and one line (fp8.py)
    if cfg.precision != "fp32" and d.device.type == "cpu" and cfg.precision == "fp16":
        raise UserError("fp16 training on CPU is not supported; use --precision bf16 or fp32")
    torch.manual_seed(cfg.seed)
    rep = Reporter(cfg, d.is_main)
    log = rep.print if d.is_main else (lambda *a, **k: None)
    if fp8_note:
        log(fp8_note)

    tok, loader = build_data(cfg.data, cfg.tokenizer, L.seq_len, cfg.seed, cfg.text_key)
    if tok.vocab > cfg.model.vocab:
        raise UserError(f"the {tok.name} tokenizer has {tok.vocab} tokens but the model's vocabulary is "
                        f"{cfg.model.vocab}; pass --vocab {tok.vocab} (or more)")

    parts, stage_ids, n_params, build_bytes = build_model(cfg, d)
    model = parts[0]            # the whole model, or this rank's first pipeline stage
    fsdp = uses_fsdp(d, L)
    dp_rank = d.mesh["dp"].get_local_rank() if d.mesh is not None else 0
    schedule = (pipeline_schedule(parts, stage_ids, d, L, cfg.schedule, _cross_entropy) if L.pp > 1 else None)
    cpx = _context_parallel(model, d, L)  # ring attention over the cp ranks (context_parallel.py)
    has_first, has_last = 0 in stage_ids, L.pp * L.vp - 1 in stage_ids
    params = [p for m in parts for p in m.parameters()]
    opt = [_optimizer(cfg, m) for m in parts]

    ckpt = Checkpointer(cfg.checkpoint_dir, d, cfg.keep) if cfg.checkpoint_dir else None
    start = 0
    if cfg.resume:
        if ckpt is None and cfg.resume == "auto":
            raise UserError("--resume auto needs --checkpoint-dir (where to look for checkpoints)")
        ckpt = ckpt or Checkpointer(cfg.checkpoint_dir or ".", d, cfg.keep)
        found = ckpt.find(cfg.resume, log=lambda m: log(f"[yellow]{m}[/]"))
        if found is not None:
            path, manifest = found
            st = manifest["state"]
            if st.get("model") != cfg.model.model_dump(mode="json"):
                raise UserError(f"checkpoint {path} holds a different model shape; resume with the same model "
                                "flags (or start a new --checkpoint-dir)")
            ckpt.load(path, parts, opt)
            loader.load_state_dict(st["data"])
            start = int(st["step"])
            log(f"resumed from {path} at step {start}")
            old_batch = (st.get("layout") or {}).get("global_batch")
            if old_batch != L.global_batch:
                log(f"[yellow]warning: global batch {L.global_batch} differs from the checkpoint's {old_batch}; "
                    "the loss curve will not continue the original one[/]")
            if st.get("schedule") != _schedule(cfg):
                log(f"[yellow]warning: the learning-rate schedule differs from the checkpoint's "
                    f"({st.get('schedule')}); the loss curve will not continue the original one[/]")

    gpu_id = cfg.gpu
    if gpu_id is None and d.device.type == "cuda":
        gpu_id = M.gpu_id_from_name(torch.cuda.get_device_name(d.device))
    peak = M.device_peak(d.device, "bf16" if cfg.precision == "fp8" else cfg.precision, cfg.gpu)  # MFU: 16-bit
    est, note = predict(cfg, gpu_id, cfg.gpus or d.world, d.device.type)
    comparable = est is not None and (d.device.type == "cuda" or cfg.hardware is not None)
    fpt = M.flops_per_token(cfg.model, L.seq_len)
    out = M.MetricsLog(cfg.metrics, d.is_main)
    out.write({"event": "start", "time": time.time(), "resumed_at": start, "world": d.world,
               "threads": torch.get_num_threads(),
               "device": str(d.device), "params": n_params, "flops_per_token": fpt,
               "peak_flops": peak.flops, "peak_source": peak.source, "prediction_note": note,
               "prediction": est.model_dump(mode="json") if est is not None else None,
               "config": cfg.describe()})
    _header(rep, cfg, d, n_params, peak, note, est)

    per_rank = L.global_batch // L.dp
    n_micro = per_rank // L.micro_batch
    tokens_per_step = L.global_batch * L.seq_len
    amp = (torch.autocast(d.device.type, dtype=precision_dtype(cfg.precision))
           if cfg.precision != "fp32" and not fsdp else contextlib.nullcontext())
    records: list[dict] = []
    rep.start(start, cfg.steps)
    try:
        for step in range(start, cfg.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            lr = lr_at(cfg, step)
            for o in opt:
                for g in o.param_groups:
                    g["lr"] = lr
            x, y = loader.take(L.global_batch, dp_rank * per_rank, per_rank)
            loss_sum = torch.zeros((), device=d.device)
            if schedule is not None:
                loss_sum = _pipeline_step(schedule, x, y, d.device, has_first, has_last, amp)
            for i in range(n_micro if schedule is None else 0):
                if fsdp:
                    model.set_requires_gradient_sync(i == n_micro - 1)
                sl = slice(i * L.micro_batch, (i + 1) * L.micro_batch)
                xb = torch.from_numpy(x[sl]).to(d.device, non_blocking=True)
                yb = torch.from_numpy(y[sl]).to(d.device, non_blocking=True)
                if cpx is not None:  # this rank's part of each sequence
                    xb, yb = cpx.shard(xb, yb)
                with amp:
                    logits = model(xb)
                loss = _cross_entropy(logits, yb)
                total = loss + cfg.moe_aux * model.aux_loss() if cfg.model.moe else loss
                (total / n_micro).backward()
                loss_sum += loss.detach()
            gnorm = clip_grad_norm(params, cfg.clip, d.mesh["pp"].get_group() if L.pp > 1 else None)
            for o in opt:
                o.step()
                o.zero_grad(set_to_none=True)
            loss_avg = loss_sum / n_micro
            if d.world > 1:
                # tp replicas hold equal losses and only the last pipeline stage has one: sum / (dp*tp) is the
                # mean over data-parallel ranks (cp ranks hold equal shares of the tokens: mean over them too)
                dist.all_reduce(loss_avg)
                loss_avg /= L.dp * L.tp * L.cp
            loss_v = float(loss_avg)  # synchronises the device
            if not math.isfinite(loss_v):
                raise UserError(f"loss became {loss_v} at step {step + 1}; lower --lr or raise --warmup")
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0      # this process's CPU time (all threads): a shared machine's clue
            tps = tokens_per_step / dt
            tfl = fpt * tps / d.world / 1e12
            rec = {"step": step + 1, "loss": loss_v, "lr": lr, "grad_norm": gnorm, "step_time_s": dt,
                   "cpu_time_s": cpu,
                   "tokens": (step + 1) * tokens_per_step, "tokens_per_s": tps,
                   "tokens_per_s_per_device": tps / d.world, "tflops_per_device": tfl,
                   "mfu": tfl * 1e12 / peak.flops if peak.flops == peak.flops else float("nan"),
                   "memory_gib": M.memory_gib(d.device), "epoch": loader.epoch}
            records.append(rec)
            out.write(rec)
            rep.step(rec)
            if ckpt and cfg.checkpoint_dir and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 \
                    and step + 1 < cfg.steps:
                _save(ckpt, step + 1, parts, opt, loader, cfg)
        if ckpt and cfg.checkpoint_dir and start < cfg.steps:
            _save(ckpt, cfg.steps, parts, opt, loader, cfg)
    finally:
        rep.stop()
        if cpx is not None:
            cpx.close()
    summary = M.summarize(records, cfg.warmup_steps_excluded)
    summary.update(peak_flops=peak.flops, peak_source=peak.source, flops_per_token=fpt, params=n_params,
                   resumed_at=start, world=d.world)
    out.write({"event": "end", "time": time.time(), **summary})
    out.close()
    if records:
        _comparison(rep, summary, est if comparable else None)
    extra = {"world": d.world, "device": d.device.type, "params": n_params, "resumed_at": start,
             "param_bytes_per_rank": local_param_bytes(parts), "build_peak_bytes_per_rank": build_bytes,
             "fsdp_ranks": _fsdp_ranks(d, L) if fsdp else None}
    js = summary_json(cfg, records, summary, est, note, comparable, extra)
    result = {"measured": summary, "prediction": est.model_dump(mode="json") if est is not None else None,
              "prediction_note": note, "config": cfg.describe(), "json": js}
    if cfg.json and d.is_main:
        print_json(js)
    return result


def _context_parallel(model, d, L):
    """PyTorch's context parallelism over the mesh's cp ranks when cp > 1, else None."""
    if L.cp <= 1:
        return None
    from .context_parallel import ContextParallel
    from .moe import moe_layers

    cp_mesh = d.mesh["cp"]
    for m in moe_layers(model):  # the load-balancing loss over whole sequences
        m.aux_group = cp_mesh.get_group()
    return ContextParallel(model, cp_mesh, L.seq_len)


def _save(ckpt: Checkpointer, step: int, model, opt, loader, cfg: TrainConfig) -> None:
    state = {"step": step, "data": loader.state_dict(), "model": cfg.model.model_dump(mode="json"),
             "layout": cfg.layout.model_dump(mode="json"), "schedule": _schedule(cfg)}
    ckpt.save(step, model, opt, state)


def _schedule(cfg: TrainConfig) -> dict:
    return {"lr": cfg.lr, "warmup": cfg.warmup, "steps": cfg.steps, "min_lr_ratio": cfg.min_lr_ratio,
            "weight_decay": cfg.weight_decay}


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def _pipeline_step(schedule, x, y, device, has_first: bool, has_last: bool, amp) -> torch.Tensor:
    """One pipeline pass over this rank's sequences; returns the sum of the micro-batch losses on the rank
    that holds the last stage (zero elsewhere). The schedule scales gradients by 1 / micro-batches, as the
    plain loop does."""
    losses: list = []
    args = (torch.from_numpy(x).to(device),) if has_first else ()
    kw = {"target": torch.from_numpy(y).to(device), "losses": losses} if has_last else {}
    with amp:
        schedule.step(*args, **kw)
    if not losses:
        return torch.zeros((), device=device)
    return torch.stack([v.detach().float() for v in losses]).sum()


def _optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    """AdamW over one model part: weight decay on matrices, none on norms."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)


def build_model(cfg: TrainConfig, d) -> tuple[list, list[int], int, int]:
    """This rank's part of the model, never the whole: (modules, their global pipeline stage ids, parameters of
    the whole model, how far this rank's peak memory rose while building, in bytes, or None).

    The model is built on the meta device (no memory), cut to this rank's pipeline stages, parallelised
    (TP, recompute, compile, FSDP), then ``to_empty`` allocates only the local shards and ``init_weights``
    fills them with their part of the layout-independent init."""
    import copy

    from .pipeline import stage_ids as _stage_ids

    L = cfg.layout
    with torch.device("meta"):
        full = Transformer(cfg.model, L.seq_len)
    n_params = count_params(full)
    make_mesh(d, L)
    if L.pp > 1:
        ids = _stage_ids(cfg.schedule, d.mesh["pp"].get_local_rank(), L.pp, L.vp)
        parts = []
        for sid in ids:
            m = copy.deepcopy(full)
            m.keep_stage(sid, L.pp * L.vp)
            parts.append(m)
    else:
        ids, parts = [0], [full]
    with M.PeakGrowth(d.device) as growth:
        for m in parts:
            if cfg.precision == "fp8":      # fp8 linears (torchao) before FSDP wraps them (fp8.py)
                from . import fp8

                fp8.apply(m, cfg.fp8_recipe)
            parallelize(m, d, L, cfg.precision, cfg.compile, cfg.compile_backend)
            m.to_empty(device=d.device)
            m.init_weights(cfg.seed)
    return parts, ids, n_params, growth.grown


def _fsdp_ranks(d, layout) -> list:
    """The global ranks of the mesh FSDP runs over on this rank's pipeline stage: ``[r0, r1, ...]`` (one shard
    group), or with HSDP ``[[replica 0's shard group], [replica 1's], ...]``."""
    from .context_parallel import fsdp_mesh

    return fsdp_mesh(d.mesh, layout.dp_replicate).mesh.tolist()


def local_param_bytes(parts) -> int:
    """Bytes of the parameters this rank holds (its shards of its stages)."""
    from torch.distributed.tensor import DTensor

    n = 0
    for m in parts:
        for p in m.parameters():
            t = p.to_local() if isinstance(p, DTensor) else p
            n += t.numel() * t.element_size()
    return n
