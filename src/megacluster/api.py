"""The Python API: what the commands do, as functions returning typed (pydantic) results.

    import megacluster as mc
    step = mc.estimate(model="llama3.1-70b", gpu="h100-sxm", gpus=64, tp=8)
    print(step.mfu, step.to_dict()["memory_gib_per_gpu"])

Every result has ``.to_dict()`` (plain JSON-ready values, the same fields as the command's ``--json``). Bad
input raises :class:`megacluster.UserError` with one line saying what to change. Models, GPUs, fabrics,
frameworks and sites are catalog ids (or a config path for a model; a :class:`ModelSpec` works too).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union

from .campaign.campaign import CampaignResult
from .errors import UserError
from .estimate import StepEstimate
from .search import SearchResult
from .sizing import SizeResult
from .specs import ModelSpec

__all__ = ["estimate", "plan", "campaign", "size", "validate", "Estimate", "Plan", "Campaign", "Validation",
           "SizeResult", "UserError"]


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return self.model_dump(mode="json")          # type: ignore[attr-defined]


class Estimate(_ToDict, StepEstimate):
    """One predicted training step (:func:`estimate`)."""


class Plan(_ToDict, SearchResult):
    """The fastest layouts that fit, fastest first (:func:`plan`); ``best`` is the first."""


class Campaign(_ToDict, CampaignResult):
    """A whole training run (:func:`campaign`)."""


def _model(model: Union[str, ModelSpec, None]) -> ModelSpec:
    from .report.inputs import resolve_model

    return resolve_model(model)


def _cluster(gpu: Optional[str], gpus: Optional[int], fabric: Optional[str] = None,
             gpus_per_node: Optional[int] = None):
    from .report.inputs import resolve_cluster

    return resolve_cluster(gpu, gpus, fabric=fabric, gpus_per_node=gpus_per_node)


def estimate(model: Union[str, ModelSpec], gpu: str, gpus: int, *, tp: Optional[int] = None,
             pp: Optional[int] = None, dp: Optional[int] = None, cp: Optional[int] = None,
             ep: Optional[int] = None, vp: Optional[int] = None, micro_batch: Optional[int] = None,
             global_batch: Optional[int] = None, seq_len: Optional[int] = None, recompute: Optional[str] = None,
             zero: Optional[int] = None, precision: Optional[str] = None, fabric: Optional[str] = None,
             framework: Optional[str] = None, gpus_per_node: Optional[int] = None,
             allow_no_fit: bool = False, dp_replicate: Optional[int] = None) -> Estimate:
    """One training step of ``model`` on ``gpus`` x ``gpu`` with the given layout (``megacluster estimate``):
    step time, tokens/s, MFU, memory per GPU. Unset degrees are 1, ``dp`` is what the GPUs leave, the global
    batch about 4M tokens. A layout that does not fit in memory raises UserError saying what would fit
    (``allow_no_fit=True`` returns it with ``fits`` False). ``dp_replicate``: HSDP replicas of the sharded state."""
    from .estimate import estimate as _estimate
    from .report.fit import does_not_fit_message
    from .report.inputs import resolve_layout, resolve_stack

    spec = _model(model)
    cluster = _cluster(gpu, gpus, fabric, gpus_per_node)
    stack = resolve_stack(framework)
    flags = dict(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, vp=vp, micro_batch=micro_batch, global_batch=global_batch,
                 seq_len=seq_len, recompute=recompute, zero=zero, precision=precision, dp_replicate=dp_replicate)
    layout = resolve_layout(spec, cluster, flags)
    est = _estimate(spec, cluster, layout, stack)
    if not est.fits and not allow_no_fit:
        raise UserError(does_not_fit_message(spec, cluster, layout, stack, est))
    return Estimate(**dict(est))


def plan(model: Union[str, ModelSpec], gpu: str, gpus: int, *, global_batch: Optional[int] = None,
         seq_len: Optional[int] = None, top: int = 5, fabric: Optional[str] = None,
         framework: Optional[str] = None, global_batch_bounds: Optional[tuple[int, int]] = None,
         memory_headroom: float = 0.0, **pins: Any) -> Plan:
    """The fastest layouts of ``model`` on ``gpus`` x ``gpu`` that fit (``megacluster plan``). Keyword pins
    fix layout fields (``tp=8``, ``precision="bf16"``, ``zero=[1, 3]``)."""
    from .report.inputs import resolve_stack
    from .search import search

    res = search(_model(model), _cluster(gpu, gpus, fabric), global_batch=global_batch, seq_len=seq_len,
                 stack=resolve_stack(framework), top=top, pins=pins, global_batch_bounds=global_batch_bounds,
                 memory_headroom=memory_headroom)
    return Plan(**dict(res))


def campaign(model: Union[str, ModelSpec, None] = None, tokens: Optional[float] = None, gpu: Optional[str] = None,
             gpus: Optional[int] = None, *, scenario: Optional[str] = None, site: Optional[str] = None,
             fabric: Optional[str] = None, global_batch: Optional[int] = None, seq_len: Optional[int] = None,
             overrides: Optional[Mapping[str, float]] = None, reliability: bool = True, trials: int = 200,
             seed: int = 0, cost_basis: str = "owned", embodied: bool = False) -> Campaign:
    """A whole training campaign (``megacluster campaign``): days with failures, power, energy, water, carbon
    and cost, each assumption with its source. Either a ``scenario`` id, or ``model``, ``tokens``, ``gpu`` and
    ``gpus`` (the plan is searched; the global batch chosen within the batch-size law's bound)."""
    from .campaign.campaign import run_campaign
    from .campaign.scenarios import run_scenario

    common = dict(overrides=dict(overrides or {}), embodied=embodied, cost_basis=cost_basis,
                  reliability=reliability, seed=seed)
    if scenario is not None:
        if any(x is not None for x in (model, tokens, gpu, gpus)):
            raise UserError("a scenario fixes the model, tokens and cluster; give scenario= alone")
        r = run_scenario(scenario, site=site, trials=trials, **common)
    else:
        missing = [k for k, v in (("model", model), ("tokens", tokens), ("gpu", gpu), ("gpus", gpus)) if v is None]
        if missing:
            raise UserError(f"campaign needs {', '.join(missing)} (or scenario=NAME)")
        if isinstance(tokens, bool) or not isinstance(tokens, (int, float)) or not tokens > 0:
            raise UserError(f"tokens must be a positive number, got {tokens!r}")
        r = run_campaign(_model(model), float(tokens), _cluster(gpu, gpus, fabric), site=site or "us-average",
                         global_batch=global_batch, seq_len=seq_len, reliability_trials=trials, **common)
    return Campaign(**dict(r))


def size(model: Union[str, ModelSpec, None] = None, tokens: Optional[float] = None, gpu: str = "h100-sxm", *,
         scenario: Optional[str] = None, **limits: Any) -> SizeResult:
    """How big, how long, how much (``megacluster size``; :func:`megacluster.sizing.size` lists the
    arguments): the smallest cluster meeting ``days``, ``max_mw`` and ``budget_usd``, or the largest model
    (``model=None``) or most tokens (``tokens=None``) a cluster trains in ``days``. A ``scenario`` id with a
    ``size`` entry (`megacluster catalog scenarios`) gives all of them."""
    from .sizing import size as _size

    if scenario is not None:
        from .campaign.scenarios import size_scenario

        if model is not None or tokens is not None:
            raise UserError("a sizing scenario fixes the model and limits; give scenario= alone")
        return size_scenario(scenario, **limits)
    return _size(model, tokens, gpu, **limits)


class Validation(_ToDict, __import__("pydantic").BaseModel):
    """The step model against published runs (:func:`validate`): per run and summary errors (fractions)."""

    runs: list[dict[str, Any]]
    mape: float
    max_abs_error: float
    n: int
    summary: dict[str, Any]
    skipped: list[dict[str, Any]] = []
    memory_mape: Optional[float] = None
    memory_max_abs_error: Optional[float] = None
    memory_n: int = 0


def validate(runs: Optional[str] = None) -> Validation:
    """Predict published runs and score the errors (``megacluster validate``). ``runs``: a runs file, or a
    catalog set (``published``, the default; ``more``)."""
    from .report.validation_view import as_json
    from .validate import load_runs, validate_runs

    data = load_runs(runs)
    if not data:
        raise UserError(f"{runs or 'runs'}: the runs list is empty")
    return Validation(**as_json(validate_runs(data)))
