"""Pipeline schedules of the runtime (``torch.distributed.pipelining``) and the one table that maps the step
model's schedule names onto them.

The step model names a stack's schedule in ``catalog/data/stacks.yaml`` (``schedule: 1f1b | dualpipe | zb-h1``) and
prices its bubble in ``physics/pipeline.py``: ``1f1b`` is 1F1B, interleaved over ``vp`` model chunks per rank
when ``vp > 1`` (Narayanan et al. 2021); ``dualpipe`` is DeepSeek's bidirectional schedule with two copies of
the parameters, which PyTorch does not ship: the runtime runs its one-direction variant ``dualpipe-v``
(``ScheduleDualPipeV``, two chunks per rank placed in a V, no copies) instead and prices what it ran; ``zb-h1`` is the
ZB-H1 schedule of Qi et al. 2024 (weight gradients deferred into the bubble), which PyTorch ships as
``ScheduleInterleavedZeroBubble`` (one or more stages per rank). ``zero-bubble`` is the
ZB-V schedule of Qi et al. 2024 (arXiv 2401.10241, section 6), which the step model does not price (the
runtime runs it and says so instead of predicting it as something else).

No torch at import: the CLI checks names and micro-batch counts before any process group exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True)
class Schedule:
    """One row of :data:`SCHEDULES`."""

    plain: str              # torch class with one stage per rank (vp = 1)
    interleaved: str        # torch class with vp stages per rank
    style: str              # stage placement: "loop" (stage s on rank s % pp) or "v" (rank r: r and 2pp-1-r)
    vp: int | None          # stages per rank the schedule needs (None: any)
    prices: str | None      # the step model's schedule that prices what runs (physics/pipeline.py; None: none)
    split_backward: bool    # runs input and weight gradients apart (selective recompute cannot: measured)

    @property
    def priced(self) -> bool:
        return self.prices is not None


_DUALPIPE_V = Schedule("ScheduleDualPipeV", "ScheduleDualPipeV", "v", 2, "dualpipe-v", True)

#: step-model schedule name -> the runtime's schedule (DeepSeek's two-copy dualpipe runs as dualpipe-v)
SCHEDULES: dict[str, Schedule] = {
    "1f1b": Schedule("Schedule1F1B", "ScheduleInterleaved1F1B", "loop", None, "1f1b", False),
    "dualpipe": _DUALPIPE_V,
    "dualpipe-v": _DUALPIPE_V,
    "zero-bubble": Schedule("ScheduleZBVZeroBubble", "ScheduleZBVZeroBubble", "v", 2, None, True),
    "zb-h1": Schedule("ScheduleInterleavedZeroBubble", "ScheduleInterleavedZeroBubble", "loop", None, "zb-h1", True),
}


def check_schedule_name(name: str) -> Schedule:
    """The table row of ``name``; an unknown name is a one-line :class:`UserError`."""
    row = SCHEDULES.get(name)
    if row is None:
        raise UserError(f"pipeline schedule {name!r} is not in the runtime (it runs "
                        f"{', '.join(SCHEDULES)}); pass --schedule 1f1b")
    return row


def needs_multiple(name: str, vp: int) -> bool:
    """Whether the schedule wants the micro-batches in whole rounds of pp (the interleaved ones)."""
    row = SCHEDULES.get(name)
    return row is not None and (vp > 1 or row.vp is not None)


def torch_class_name(name: str, vp: int) -> str:
    row = check_schedule_name(name)
    return row.interleaved if vp > 1 else row.plain


def schedule_problem(name: str, pp: int, vp: int, n_micro: int, n_layers: int,
                     recompute: str = "none") -> str | None:
    """Why ``pp`` ranks x ``vp`` stages with ``n_micro`` micro-batches cannot run ``name`` (None if they can)."""
    row = check_schedule_name(name)
    if row.split_backward and recompute == "selective":
        # torch 2.13 on gloo: "Trying to backward an extra time" from the weight-gradient pass
        return (f"selective recompute does not run under the {name} schedule (it computes input and weight "
                "gradients in two passes; PyTorch's selective checkpoint frees its saved tensors after the "
                "first); pass --recompute full or none")
    if row.vp is not None and vp != row.vp:
        return f"the {name} schedule runs {row.vp} stages per pipeline rank; pass --vp {row.vp}"
    if pp * vp > n_layers:
        return (f"pp*vp = {pp}*{vp} = {pp * vp} pipeline stages is more than the model's {n_layers} layers; "
                f"pass --vp {max(1, n_layers // pp)}" if n_layers >= pp else
                f"pp={pp} needs at least {pp} layers; the model has {n_layers}")
    need = pp * vp if row is _DUALPIPE_V else pp
    if n_micro < need:
        return (f"the {name} schedule with pp={pp}{f' x vp={vp}' if vp > 1 else ''} needs at least {need} "
                f"micro-batches per step, this layout gives {n_micro}; raise --global-batch or lower --micro-batch")
    if vp > 1 or row.vp is not None:
        rounds = max(1, n_micro // pp)
        if n_micro % rounds:
            return (f"the interleaved {name} schedule needs the {n_micro} micro-batches in whole rounds of "
                    f"pp={pp}; pass a --global-batch giving a multiple of {pp} micro-batches")
    return None


def stage_ids(name: str, rank: int, pp: int, vp: int) -> list[int]:
    """Global stage indices held by pipeline rank ``rank`` (``pp * vp`` stages in all)."""
    if check_schedule_name(name).style == "v":
        return [rank, 2 * pp - 1 - rank]
    return [rank + i * pp for i in range(vp)]


def build_schedule(name: str, stages: list, n_micro: int, loss_fn):
    """The torch schedule object for this rank's ``stages`` (PipelineStage objects)."""
    from torch.distributed import pipelining

    cls = getattr(pipelining, torch_class_name(name, len(stages)))
    arg = stages[0] if cls.__name__ in ("Schedule1F1B", "ScheduleGPipe") else stages
    return cls(arg, n_micro, loss_fn=loss_fn)
