"""Prediction intervals: how far a predicted step can be from the measured one, judged by how the step model
errs on published runs it is not tuned on.

Method (also in docs/architecture.md):

* The **residual** of a published run is ``log(predicted / measured)`` tokens per second per GPU. The table of
  residuals of every run in ``runs.yaml`` and ``runs_more.yaml`` is generated once
  (``benchmarks/residuals.py`` -> ``catalog/data/residuals.json``; a test checks it matches the step model).
* Runs come in **families**: one source's runs (one paper, one benchmark page) share their errors. A run's own
  interval is built without its family (leave-one-family-out), so it is scored on runs it was not drawn from.
* The residuals of **runs like it**: the same GPU generation and software stack where at least
  ``MIN_GROUP_RUNS`` runs from ``MIN_GROUP_FAMILIES`` families remain, else the same generation, else all.
* The **80% band** is the conformal order statistics of those residuals with each family weighing the same
  (``family_conformal_edges``): a source's runs share their errors, so it is the sources that are exchangeable,
  not the runs. With ``F`` families the edges are the weighted quantiles at floor((F+1) x 0.1)/(F+1) and
  ceil((F+1) x 0.9)/(F+1) (finite-sample, no distribution assumed; one run per family gives the plain order
  statistics); the band is stretched to contain 0 so that it contains the point prediction.
* **Widening** with distance from the validated runs: each edge is multiplied by
  1 + ``r`` per rare feature of the layout (CP, MoE/EP, fp8, a framework the catalog does not know, a GPU
  generation or stack: present in fewer than ``MIN_FEATURE_RUNS`` of the remaining runs) +
  ``WIDEN_PER_OCTAVE`` per octave (factor 2) by which GPUs, total parameters or sequence length lie outside
  the remaining runs' range. The octave rate is a stated assumption. The feature rate ``r`` is **calibrated**
  like the band itself: the smallest rate on a grid of 0.05 steps (``WIDEN_GRID``) at which the runs that
  have a rare feature are covered at the nominal level (80%) by their own leave-family-out bands, each family
  weighing the same (``fit_widen_per_feature``; stored in the residual table's header and regenerated with
  it). Widening only enlarges a band, so coverage does not fall as ``r`` grows and the smallest such rate is
  well defined.
* A rate (tokens/s, MFU) ``P`` lies in ``[P exp(-hi), P exp(-lo)]``; a time (step, days) ``T`` in
  ``[T exp(lo), T exp(hi)]``.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from .run_family import family_key

LEVEL = 0.8                 # central coverage of the interval
Q_LO, Q_HI = round((1 - LEVEL) / 2, 12), round(1 - (1 - LEVEL) / 2, 12)     # 0.1, 0.9
MIN_GROUP_RUNS = 10         # runs a (generation, stack) or generation group needs to be used on its own ...
MIN_GROUP_FAMILIES = 2      # ... from at least this many families
MIN_FEATURE_RUNS = 5        # a feature with fewer remaining runs is rare: the interval widens
WIDEN_PER_FEATURE = 0.5     # default per-rare-feature rate where a table carries no calibrated one
WIDEN_GRID = tuple(round(0.05 * i, 2) for i in range(41))     # rates tried by fit_widen_per_feature: 0 .. 2
WIDEN_PER_OCTAVE = 0.25     # stated assumption: +25% band per octave outside the validated range
RESIDUALS = "residuals.json"     # in catalog/data: JSON, not YAML, so that estimate reads it in a millisecond
RUN_SETS = ("published", "more")
AXES = ("n_gpus", "params", "seq_len")
FLAGS = ("cp", "moe", "fp8", "unknown_framework")


# ------------------------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class Features:
    """What makes a prediction like or unlike a validated run. ``stack``: the catalog stack id, or the
    framework's own name where the catalog does not know it (then ``unknown_framework``)."""

    generation: str
    stack: str
    n_gpus: int
    params: float
    seq_len: int
    cp: bool = False
    moe: bool = False
    fp8: bool = False
    unknown_framework: bool = False


def features(model, gpu, layout, stack) -> Features:
    """Features of a prediction from its ``ModelSpec``, ``GPUSpec``, ``Layout`` and ``StackSpec``."""
    from . import catalog

    name = str(stack.framework)
    sid = catalog.stack_constants(name)["id"] if catalog.has("stacks", name) else name.strip().lower()
    return Features(generation=str(gpu.generation), stack=sid,
                    n_gpus=int(layout.n_gpus), params=float(model.params_total), seq_len=int(layout.seq_len),
                    cp=layout.cp > 1, moe=model.moe is not None or layout.ep > 1, fp8=layout.precision == "fp8")


def run_features(run: dict, result) -> Features:
    """Features of a validated run (its runs-file entry, spec filled, and its ``RunResult``)."""
    from .validate import _precision, _written_framework, _written_is_known, model_from_run

    s = run["spec"]
    model = model_from_run(run)
    known = _written_is_known(s)
    stack = result.framework if known else _written_framework(s).strip().lower()
    return Features(generation=result.generation, stack=stack, n_gpus=int(result.n_gpus),
                    params=float(model.params_total), seq_len=int(s["seq_len"]), cp=int(s.get("cp") or 1) > 1,
                    moe=model.moe is not None or int(s.get("ep") or 1) > 1, fp8=_precision(s)[0] == "fp8",
                    unknown_framework=not known)


# ------------------------------------------------------------------------------------------------ residuals
def residual_rows(run_sets: Sequence[str] = RUN_SETS) -> list[dict[str, Any]]:
    """Predict every run of the catalog's run sets: one row per run with its set, family, features, predicted
    and measured tokens/s per GPU and residual ``log(predicted / measured)``. Runs the step model cannot
    predict are left out. (About two seconds for the ~120 runs.)"""
    from .validate import _checked, load_runs, predict_run
    from .errors import UserError

    rows = []
    for name in run_sets:
        for i, run in enumerate(load_runs(name)):
            rid = str(run.get("id", f"#{i + 1}"))
            try:
                filled = _checked(run, rid)
                res = predict_run(filled)
            except (UserError, KeyError, TypeError, ValueError):
                continue
            f = run_features(filled, res)
            rows.append({"id": rid, "set": name, "family": family_key(run), **asdict(f),
                         "predicted": round(float(res.predicted), 4), "measured": round(float(res.reference), 4),
                         "residual": round(math.log(res.predicted / res.reference), 6)})
    return rows


@functools.lru_cache(maxsize=1)
def _table_file() -> dict[str, Any]:
    import json

    from .errors import UserError

    try:
        with open(residual_path(), encoding="utf-8") as f:
            data = json.load(f)
        data["runs"] = tuple(data["runs"])
        return data
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"the residual table {residual_path()} is missing or malformed: regenerate it with "
                        f"`python benchmarks/residuals.py`") from None


def residual_table() -> tuple[dict[str, Any], ...]:
    """The generated residual table (``catalog/data/residuals.json``), read once per process."""
    return _table_file()["runs"]


def clear_table_cache() -> None:
    """Forget the residual table read so far (after it is rewritten, or when a test points it elsewhere)."""
    _table_file.cache_clear()


def widen_per_feature() -> float:
    """The calibrated per-rare-feature widening rate stored with the residual table (``fit_widen_per_feature``),
    or ``WIDEN_PER_FEATURE`` for a table written before the rate was calibrated; a rate that is not a number of
    the grid's range is a malformed table."""
    from .errors import UserError

    rate = _table_file().get("widen_per_feature", WIDEN_PER_FEATURE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not WIDEN_GRID[0] <= rate <= WIDEN_GRID[-1]:
        raise UserError(f"the residual table {residual_path()} has a malformed widen_per_feature ({rate!r}): "
                        f"regenerate it with `python benchmarks/residuals.py`")
    return float(rate)


# ------------------------------------------------------------------------------------------------ the band
@dataclass(frozen=True)
class Band:
    """An 80% band of log(predicted / measured): ``lo <= 0 <= hi``; how it was drawn."""

    lo: float
    hi: float
    group: str              # "hopper/megatron", "hopper" or "all"
    n: int                  # residuals it was drawn from
    families: int
    widen: float            # factor applied for distance (1: none)
    rare: tuple[str, ...]   # rare features and out-of-range axes that widened it

    def rate(self, value: float) -> list[float]:
        """Interval of a rate (tokens/s, MFU, TFLOP/s): the true value is predicted / exp(residual)."""
        return [float(value * math.exp(-self.hi)), float(value * math.exp(-self.lo))]

    def time(self, value: float) -> list[float]:
        """Interval of a time (step, days): the true value is predicted x exp(residual)."""
        return [float(value * math.exp(self.lo)), float(value * math.exp(self.hi))]

    def half_width(self) -> float:
        """Half the relative width of a rate's interval: (hi - lo) / 2 in rate units over the point."""
        return (math.exp(-self.lo) - math.exp(-self.hi)) / 2

    def basis(self) -> dict[str, Any]:
        return {"level": LEVEL, "group": self.group, "runs": self.n, "families": self.families,
                "log_band": [self.lo, self.hi], "widen": self.widen, "far_from_validated": list(self.rare)}


def family_conformal_edges(residuals: Sequence[float], families: Sequence[str], q_lo: float = Q_LO,
                           q_hi: float = Q_HI) -> tuple[float, float]:
    """(lower, upper) edges of a central band from residuals that come in families whose errors are shared:
    each family weighs the same (each of its ``m`` runs 1/m), and the finite-sample levels count families, not
    runs: with ``F`` families the edges are the weighted quantiles at floor((F+1) q_lo)/(F+1) and
    ceil((F+1) q_hi)/(F+1) (the smallest residual whose cumulative weight reaches the level; level 0 is the
    smallest residual). With one run per family these are the plain conformal order statistics, the
    floor((n+1) q_lo)-th and ceil((n+1) q_hi)-th of n residuals; with few families the band is the residuals'
    whole range."""
    r = np.asarray(residuals, dtype=float)
    fam = list(families)
    if len(r) == 0 or len(fam) != len(r):
        raise ValueError("a band needs residuals, and one family name for each")
    count = Counter(fam)
    n_fam = len(count)
    order = np.argsort(r, kind="stable")
    w = np.array([1.0 / count[fam[i]] for i in order]) / n_fam
    cum = np.cumsum(w)
    p_lo = math.floor((n_fam + 1) * q_lo + 1e-9) / (n_fam + 1)
    p_hi = min(math.ceil((n_fam + 1) * q_hi - 1e-9) / (n_fam + 1), 1.0)

    def at(p: float) -> float:
        j = int(np.searchsorted(cum, p - 1e-12, side="left"))
        return float(r[order[min(j, len(r) - 1)]])
    return at(p_lo), at(p_hi)


def _enough(rows: list[dict]) -> bool:
    return len(rows) >= MIN_GROUP_RUNS and len({r["family"] for r in rows}) >= MIN_GROUP_FAMILIES


def distance(f: Features, pool: Sequence[dict]) -> tuple[int, float, tuple[str, ...]]:
    """(rare features, octaves out of range, what is far) of ``f`` against the ``pool`` runs: a feature is rare
    where fewer than ``MIN_FEATURE_RUNS`` pool runs share it; octaves sum over GPUs, total parameters and
    sequence length, each outside the pool's range."""
    rare, out, far = 0, 0.0, []
    for name in FLAGS:
        if getattr(f, name) and sum(bool(r[name]) for r in pool) < MIN_FEATURE_RUNS:
            rare += 1
            far.append(name.replace("_", " "))
    for name, value in (("generation", f.generation), ("stack", f.stack)):
        if name == "stack" and f.unknown_framework:
            continue                        # counted once, as the unknown framework
        if sum(r[name] == value for r in pool) < MIN_FEATURE_RUNS:
            rare += 1
            far.append(f"{name} {value}")
    for name in AXES:
        v = float(getattr(f, name))
        vals = [float(r[name]) for r in pool]
        lo, hi = min(vals), max(vals)
        octaves = max(0.0, math.log2(lo / v) if v < lo else math.log2(v / hi) if v > hi else 0.0)
        if octaves > 0:
            out += octaves
            far.append(f"{name} {octaves:.1f} octaves outside {lo:,.4g}..{hi:,.4g}")
    return rare, out, tuple(far)


def band(f: Features, rows: Optional[Iterable[dict]] = None, exclude_family: Optional[str] = None,
         exclude_id: Optional[str] = None, per_feature: Optional[float] = None) -> Band:
    """The 80% band of a prediction with features ``f`` from the residual ``rows`` (default: the catalog's
    table), leaving out the family ``exclude_family`` (and the run ``exclude_id``). ``per_feature``: the
    widening per rare feature (default: the table's calibrated rate, ``widen_per_feature``)."""
    if per_feature is None:
        per_feature = widen_per_feature() if rows is None else WIDEN_PER_FEATURE
    rows = residual_table() if rows is None else rows
    pool = [r for r in rows if r["family"] != exclude_family and r["id"] != exclude_id]
    if not pool:
        raise ValueError("no residuals left once the run's own family is excluded")
    same_gen = [r for r in pool if r["generation"] == f.generation]
    same = [r for r in same_gen if r["stack"] == f.stack]
    if _enough(same):
        use, group = same, f"{f.generation}/{f.stack}"
    elif _enough(same_gen):
        use, group = same_gen, f.generation
    else:
        use, group = pool, "all"
    lo, hi = family_conformal_edges([r["residual"] for r in use], [r["family"] for r in use])
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    rare, octaves, far = distance(f, pool)
    w = 1.0 + per_feature * rare + WIDEN_PER_OCTAVE * octaves
    return Band(lo=lo * w, hi=hi * w, group=group, n=len(use), families=len({r["family"] for r in use}),
                widen=w, rare=far)


# ------------------------------------------------------------------------------------------------ attaching
def estimate_band(est, model, gpu) -> Band:
    """The 80% band of one ``StepEstimate`` of ``model`` on ``gpu`` (a ``GPUSpec``)."""
    return band(features(model, gpu, est.layout, est.stack))


def estimate_intervals(est, model, gpu) -> dict[str, Any]:
    """``{"step_time_s": [lo, hi], "tokens_per_s": ..., "tokens_per_s_per_gpu": ..., "mfu": ...,
    "tflops_per_gpu": ..., "basis": {...}}`` for one ``StepEstimate``."""
    b = estimate_band(est, model, gpu)
    return {"step_time_s": b.time(est.step_time_s), "tokens_per_s": b.rate(est.tokens_per_s),
            "tokens_per_s_per_gpu": b.rate(est.tokens_per_s_per_gpu), "mfu": b.rate(est.mfu),
            "tflops_per_gpu": b.rate(est.tflops_per_gpu), "basis": b.basis()}


def validation_intervals(runs: list[dict], results: list, rows: Optional[Iterable[dict]] = None) -> dict[str, Any]:
    """Each validated run's leave-family-out interval of tokens/s per GPU, whether the measurement is inside, and
    coverage overall, by run set given and by group: ``{"by_run": {id: {...}}, "coverage": {...}}``."""
    from .validate import _checked

    rate = widen_per_feature() if rows is None else WIDEN_PER_FEATURE
    rows = list(residual_table() if rows is None else rows)
    by_id = {}
    for i, run in enumerate(runs):
        if isinstance(run, dict):
            by_id.setdefault(str(run.get("id", f"#{i + 1}")), run)
    out = {}
    for res in results:
        run = by_id.get(res.id)
        if run is None:
            continue
        filled = _checked(run, res.id)
        b = band(run_features(filled, res), rows, exclude_family=family_key(run), exclude_id=res.id,
                 per_feature=rate)
        lo, hi = b.rate(res.predicted)
        out[res.id] = {"interval": [lo, hi], "inside": bool(lo <= res.reference <= hi),
                       "half_width": b.half_width(), "basis": b.basis()}
    return {"by_run": out, "coverage": coverage_summary(results, out)}


def coverage(inside: Sequence[bool]) -> float:
    """Share of runs whose measurement lies inside their interval."""
    return float(np.mean(np.asarray(inside, dtype=bool))) if len(inside) else float("nan")


def coverage_summary(results: list, by_run: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Coverage and median half-width, overall (``all``) and by the groups ``validate`` scores (GPU generation,
    framework), keyed as in ``validate.summarise``."""
    def stats(rs):
        rs = [r for r in rs if r.id in by_run]
        if not rs:
            return {"n": 0, "coverage": float("nan"), "median_half_width": float("nan")}
        return {"n": len(rs), "coverage": coverage([by_run[r.id]["inside"] for r in rs]),
                "median_half_width": float(np.median([by_run[r.id]["half_width"] for r in rs]))}

    out = {"all": stats(results)}
    for key in ("generation", "framework"):
        for v in sorted({getattr(r, key) for r in results}):
            out[f"{key}:{v}"] = stats([r for r in results if getattr(r, key) == v])
    return out


# ------------------------------------------------------------------------------------------------ the table file
def residual_path():
    from . import catalog

    return catalog.DATA / RESIDUALS


def residual_table_text(rows: Optional[list[dict]] = None) -> str:
    """The JSON text of the residual table, one run per line (deterministic: the same step model gives the
    same bytes)."""
    import json

    rows = residual_rows() if rows is None else rows
    head = {"generated": "by benchmarks/residuals.py: do not edit; regenerate after any change to the step model "
                         "or the catalog (tests/test_uncertainty.py checks it)",
            "source": "computed: megacluster's step model (validate.predict_run) on every run of runs.yaml "
                      "(set published) and runs_more.yaml (set more); each run's own source is in those files. "
                      "residual = ln(predicted / measured tokens per second per GPU).",
            "widen_per_feature": fit_widen_per_feature(rows),
            "widen_basis": "calibrated (uncertainty.fit_widen_per_feature): the smallest rate, in steps of 0.05, "
                           "at which the runs with a rare feature lie inside their leave-family-out 80% bands "
                           "at least 80% of the time, each family weighing the same"}
    lines = [json.dumps(r) for r in rows]
    return json.dumps(head)[:-1] + ',\n"runs": [\n' + ",\n".join(lines) + "\n]}\n"


def write_residual_table() -> tuple[Any, list[dict]]:
    """Predict every catalog run and write ``catalog/data/residuals.json``; returns (path, rows)."""
    rows = residual_rows()
    path = residual_path()
    path.write_text(residual_table_text(rows), encoding="utf-8")
    clear_table_cache()
    return path, rows


def _row_features(r: dict) -> Features:
    return Features(**{k: r[k] for k in Features.__dataclass_fields__})


def _loo_bands(rows: Sequence[dict], per_feature: float) -> dict[tuple[str, str], Band]:
    """Each row's leave-family-out band (keyed by (id, set)) at the widening rate ``per_feature``."""
    return {(r["id"], r["set"]): band(_row_features(r), rows, exclude_family=r["family"], exclude_id=r["id"],
                                      per_feature=per_feature) for r in rows}


def fit_widen_per_feature(rows: Sequence[dict]) -> float:
    """The smallest rate of ``WIDEN_GRID`` at which the rows with a rare feature (against their own
    leave-family-out pool) lie inside their leave-family-out bands at least ``LEVEL`` of the time, each family
    weighing the same (the mean over families of the share of its rare-feature rows covered: a family is the
    unit whose errors are shared, and one source with many runs would otherwise set the rate alone); the
    largest rate where none reaches it, 0 where no row has a rare feature. Coverage cannot fall as the rate
    grows (widening only enlarges a band), so the grid is bisected."""
    rows = list(rows)
    if not rows:
        return WIDEN_PER_FEATURE

    def covered(rate: float) -> Optional[float]:
        bands = _loo_bands(rows, rate)
        by_family: dict[str, list[bool]] = {}
        for r in rows:
            b = bands[r["id"], r["set"]]
            if any(not x.startswith(AXES) for x in b.rare):
                by_family.setdefault(r["family"], []).append(b.lo <= r["residual"] <= b.hi)
        return float(np.mean([coverage(v) for v in by_family.values()])) if by_family else None

    if covered(WIDEN_GRID[0]) is None:
        return 0.0
    lo, hi = 0, len(WIDEN_GRID) - 1
    if covered(WIDEN_GRID[hi]) < LEVEL:
        return WIDEN_GRID[hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if covered(WIDEN_GRID[mid]) >= LEVEL:
            hi = mid
        else:
            lo = mid + 1
    return WIDEN_GRID[lo]


def _by_set(inside: dict[tuple[str, str], bool], hw: dict[tuple[str, str], float]) -> dict[str, dict[str, float]]:
    """Coverage and median half-width by run set and overall (``all``) of bands keyed by (id, set)."""
    out = {}
    for name in sorted({s for _, s in inside}) + ["all"]:
        keys = [k for k in inside if name in ("all", k[1])]
        out[name] = {"n": len(keys), "coverage": coverage([inside[k] for k in keys]),
                     "median_half_width": float(np.median([hw[k] for k in keys]))}
    return out


def loo_coverage(rows: Optional[Sequence[dict]] = None, per_feature: Optional[float] = None
                 ) -> dict[str, dict[str, float]]:
    """Coverage of each run's leave-family-out band and the median half-width, by run set and overall
    (``all``), computed on the table's own residuals (at the table's calibrated widening rate, or
    ``per_feature``)."""
    if per_feature is None:
        per_feature = widen_per_feature() if rows is None else fit_widen_per_feature(list(rows))
    rows = list(residual_table() if rows is None else rows)
    bands = _loo_bands(rows, per_feature)
    inside = {k: b.lo <= r["residual"] <= b.hi for r in rows for k, b in [((r["id"], r["set"]),
                                                                          bands[r["id"], r["set"]])]}
    hw = {k: b.half_width() for k, b in bands.items()}
    return _by_set(inside, hw)


def nested_loo_coverage(rows: Optional[Sequence[dict]] = None) -> dict[str, dict[str, float]]:
    """``loo_coverage`` with the widening rate also refitted without each run's own family (nested: nothing about
    a run's source reaches its band, not even through the rate). Slower (one fit per family, a few seconds)."""
    rows = list(residual_table() if rows is None else rows)
    rates = {f: fit_widen_per_feature([r for r in rows if r["family"] != f]) for f in {r["family"] for r in rows}}
    inside, hw = {}, {}
    for r in rows:
        b = band(_row_features(r), rows, exclude_family=r["family"], exclude_id=r["id"],
                 per_feature=rates[r["family"]])
        inside[r["id"], r["set"]] = b.lo <= r["residual"] <= b.hi
        hw[r["id"], r["set"]] = b.half_width()
    return _by_set(inside, hw)


def json_fields(intervals: dict[str, Any]) -> dict[str, Any]:
    """``{"<value>_interval": [lo, hi], ..., "interval_basis": {...}}``: the keys ``--json`` adds beside each
    predicted value."""
    return {(k if k == "interval_basis" else f"{k}_interval"): v for k, v in
            {**{k: v for k, v in intervals.items() if k != "basis"}, "interval_basis": intervals["basis"]}.items()}


def basis_text(basis: dict) -> str:
    """One line on where an 80% interval comes from (``uncertainty.Band.basis``)."""
    far = basis.get("far_from_validated") or []
    widened = f"; widened x{basis['widen']:.2f}: far from validated runs in {', '.join(far)}" if far else ""
    group = "all runs" if basis["group"] == "all" else f"runs on {basis['group']}"
    return (f"80% intervals: the step model's cross-validated error on {basis['runs']} published {group} "
            f"({basis['families']} sources){widened}")
