"""Monte Carlo simulation of a training campaign under failures (vectorised numpy, seeded, reproducible).

The model. A job of N GPUs needs ``days`` of failure-free training. It runs in *attempts*: from a restart,
training runs until the next interruption, which arrives after a time X drawn from the profile's distribution
(exponential; Weibull; or "bursty", a two-phase mixture where a share of restarts fail again quickly) with mean
= 1 / (sum of the component rates at N GPUs). Its cause is drawn in proportion to the component rates. Every
``tau`` hours of training the job checkpoints, stalling ``delta`` hours; a checkpoint counts once durable
(``lag`` after its snapshot; 0 for synchronous saves). An unplanned interruption loses the work since the last
durable checkpoint and costs detect + restart + checkpoint read (+ a wait for a repaired node when the hot-spare
pool is empty); a planned one checkpoints first (no work lost) and costs restart + read. Failures strike only
while the job runs (not during restarts). The campaign ends when the durable work plus the last attempt's work
reach ``days``.

Goodput (effective training time ratio) = training days / wall-clock days of one trial.

The best checkpoint interval is found by simulation: on a pool of attempts drawn once (common random numbers),
minimise expected wall time per unit of work, sum(X + downtime) / sum(durable work), over tau.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

import numpy as np
from pydantic import BaseModel, Field

from ..errors import UserError, short
from ..limits import check_number
from ..specs import ModelSpec
from .checkpoint import CheckpointCost, checkpoint_cost
from .failures import JobRates, job_rates, spare_shortage_probability, spares_needed
from .intervals import daly, exponential_optimum, young
from .profiles import Profile, load_profile

POOL = 200_000  # attempts in the interval-search pool
MAX_ATTEMPTS = 4_000_000  # trials x attempts one simulation may draw (a few seconds); fewer trials past it
WEIBULL_SHAPES = (0.1, 10.0)  # Weibull shapes accepted (Schroeder & Gibson 2007 fit 0.7-0.8 to HPC failures)
MIN_INTERVAL_MINUTES = 1.0 / 60.0  # a checkpoint interval shorter than a second is not a plan
# the most each override may be: past these the figures describe no real job (and overflow the arithmetic)
OVERRIDE_MAX = {
    "detect_minutes": (10_080.0, "a week"), "restart_minutes": (10_080.0, "a week"),
    "repair_hours": (8_760.0, "a year"), "stall_seconds": (86_400.0, "a day"), "step_seconds": (86_400.0, "a day"),
    "burst_mean_minutes": (10_080.0, "a week"), "rate_scale": (10_000.0, "10,000 times the profile's rates"),
    "spares": (10_000_000, "ten million nodes"), "write_gbs": (1e7, "10 PB/s"), "read_gbs": (1e7, "10 PB/s"),
    "node_gbs": (1e6, "1 PB/s per node"), "shards": (10_000_000, "ten million writers"),
}
# the least a positive override may be (0 keeps its meaning where it has one: no step boundaries)
OVERRIDE_MIN = {"step_seconds": (1e-3, "a millisecond"), "write_gbs": (1e-3, "1 MB/s"),
                "read_gbs": (1e-3, "1 MB/s"), "node_gbs": (1e-3, "1 MB/s"), "stall_seconds": (1e-6, "a microsecond"),
                "burst_mean_minutes": (1e-3, "a few milliseconds")}
CHUNK_ELEMENTS = 1_000_000  # trials x attempts processed at once (memory bound)

OVERRIDES = {
    "detect_minutes": "mean time to detect a failure, minutes",
    "restart_minutes": "relaunch and initialisation time, minutes (checkpoint read added)",
    "repair_hours": "time to repair a failed node, hours",
    "spares": "hot-spare nodes (None: a replacement is always free)",
    "checkpoint_mode": "sync, async or memory",
    "precision": "training precision of the checkpointed weights",
    "optimizer": "adam, sgd or none",
    "weights_only": "checkpoint weights only",
    "shards": "ranks writing distinct checkpoint pieces",
    "write_gbs": "aggregate storage write bandwidth, GB/s",
    "read_gbs": "aggregate storage read bandwidth, GB/s",
    "node_gbs": "storage bandwidth per node, GB/s",
    "stall_seconds": "training stall per checkpoint, seconds (replaces the computed one)",
    "distribution": "exponential, weibull or bursty",
    "weibull_shape": "Weibull shape k",
    "burst_fraction": "share of restarts followed by a quick re-failure (bursty)",
    "burst_mean_minutes": "mean time to that quick re-failure, minutes (bursty)",
    "rate_scale": "multiplier on every unplanned failure rate",
    "step_seconds": "training step time, seconds: checkpoints fall on step boundaries",
}


class Sourced(BaseModel):
    value: Any
    source: str


class ReliabilityResult(BaseModel):
    """Outcome of a simulated campaign. Hours, minutes and days as the field names say; counts are means over
    trials unless named otherwise."""

    profile: str
    n_gpus: int
    training_days: float
    trials: int
    seed: int
    distribution: str
    # failures
    interruptions_mean: float
    interruptions_p95: float
    unexpected_interruptions_mean: float
    planned_interruptions_mean: float
    by_cause: dict[str, float]
    by_group: dict[str, float]
    gpu_share: float
    hardware_share: float
    mttf_hours: Optional[float]  # None: no unexpected failures
    mtbi_hours: Optional[float]
    # time
    goodput_mean: float
    goodput_p5: float
    goodput_p95: float
    wall_clock_days_mean: float
    wall_clock_days_p5: float
    wall_clock_days_p95: float
    lost_work_hours_mean: float
    restart_hours_mean: float
    checkpoint_stall_hours_mean: float
    # checkpointing
    checkpoint: CheckpointCost
    checkpoint_interval_minutes: float
    interval_searched: bool
    best_interval_minutes: float
    young_minutes: float
    daly_minutes: float
    exponential_optimum_minutes: float
    goodput_expected_at_best: float
    goodput_expected_at_daly: float
    daly_comparison: str
    # spares
    spares: Optional[int]
    spare_shortage_probability: float
    spares_needed: int
    anchors: list[dict[str, Any]]
    assumptions: dict[str, Sourced]
    # expected goodput (renewal-reward on the pool) against the checkpoint interval: {"minutes", "goodput"}
    interval_curve: dict[str, list[float]] = {}
    # one simulated campaign attempt by attempt (for the report's timeline; left out of the JSON): lists
    # "start_h", "run_h", "work_h", "lost_h", "down_h" (wall-clock hours), "cause" (component ids), "end_h",
    # "last_work_h" (the work of the attempt that finishes), "profile"
    example_run: Optional[dict[str, Any]] = Field(default=None, exclude=True)
    notes: list[str] = []


# --------------------------------------------------------------------------------------------- sampling
class _Sampler:
    """Draws attempts: time to interruption X (h), cause index, downtime D (h)."""

    def __init__(self, rates: JobRates, dist: str, shape: float, burst_fraction: float, burst_mean_h: float,
                 down_h: np.ndarray, hw: np.ndarray, p_short: float, repair_h: float, spares: Optional[int]):
        self.mean = 1.0 / rates.total if rates.total > 0 else 1e15
        self.cum = np.cumsum(rates.per_hour / rates.total) if rates.total > 0 else np.ones(len(rates.ids))
        self.cum[-1] = 1.0
        self.dist, self.shape = dist, shape
        self.bf, self.bm = burst_fraction, burst_mean_h
        if dist == "bursty":
            rest = self.mean - burst_fraction * burst_mean_h
            if rest <= 0:
                raise UserError(f"burst_mean_minutes {burst_mean_h * 60:g} is too long: burst_fraction x burst "
                                f"mean must stay below the mean time between interruptions ({self.mean * 60:.1f} min)")
            self.m2 = rest / (1.0 - burst_fraction)
        self.down_h, self.hw = down_h, hw
        self.p_short, self.repair_h, self.spares = p_short, repair_h, spares

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]):
        if self.dist == "exponential":
            x = rng.exponential(self.mean, shape)
        elif self.dist == "weibull":
            x = rng.weibull(self.shape, shape) * (self.mean / math.gamma(1.0 + 1.0 / self.shape))
        else:
            quick = rng.random(shape) < self.bf
            x = rng.exponential(1.0, shape) * np.where(quick, self.bm, self.m2)
        cause = np.searchsorted(self.cum, rng.random(shape), side="right")
        np.minimum(cause, len(self.cum) - 1, out=cause)
        d = self.down_h[cause]
        if self.p_short > 0:
            wait = rng.random(shape) < self.p_short
            wait &= self.hw[cause]
            if self.spares:
                w = self.repair_h * rng.beta(1.0, self.spares, shape)
            else:
                w = np.full(shape, self.repair_h)
            d = d + np.where(wait, w, 0.0)
        return x, cause, d


def _attempt(x, planned, tau, delta, lag):
    """Per attempt: durable work, checkpoint stall time, lost time (hours)."""
    c = tau + delta
    taken = np.floor(x / c)
    durable = np.floor(np.maximum(x - lag, 0.0) / c) if lag > 0 else taken
    stall = taken * delta
    work = np.where(planned, x - stall, durable * tau)
    return work, stall, x - work - stall


def _expected_ratio(tau, pool, delta, lag) -> float:
    """Expected wall time per unit of durable work at interval ``tau`` (renewal-reward over the pool)."""
    xu, xp, total = pool
    c = tau + delta
    work = tau * np.floor(np.maximum(xu - lag, 0.0) / c).sum() if lag > 0 else tau * np.floor(xu / c).sum()
    if xp.size:
        work += xp.sum() - delta * np.floor(xp / c).sum()
    return float(total / work) if work > 0 else math.inf


def _search(pool, delta, lag, work_h, guess) -> float:
    """Interval (hours) minimising expected wall time per unit work on the pool: log grid, then golden
    section inside the best bracket."""
    lo = max(guess / 50.0, 1.0 / 3600.0, lag - delta + 1e-9)
    hi = max(min(guess * 50.0, work_h), lo * 1.01)
    grid = np.geomspace(lo, hi, 61)
    vals = np.array([_expected_ratio(t, pool, delta, lag) for t in grid])
    i = int(np.argmin(vals))
    a, b = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, len(grid) - 1)])
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = _expected_ratio(math.exp(c), pool, delta, lag), _expected_ratio(math.exp(d), pool, delta, lag)
    for _ in range(25):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = _expected_ratio(math.exp(c), pool, delta, lag)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = _expected_ratio(math.exp(d), pool, delta, lag)
    best = math.exp((a + b) / 2)
    return best if _expected_ratio(best, pool, delta, lag) <= vals[i] else float(grid[i])


# --------------------------------------------------------------------------------------------- campaign
def _campaign(rng, sampler: _Sampler, planned_c: np.ndarray, ncomp: int, trials: int, work_h: float,
              tau: float, delta: float, lag: float, expected_attempts: float, progress=None):
    wall = np.zeros(trials)
    lost = np.zeros(trials)
    down = np.zeros(trials)
    stall = np.zeros(trials)
    n_int = np.zeros(trials, dtype=np.int64)
    counts = np.zeros((trials, ncomp), dtype=np.int64)
    done_work = np.zeros(trials)
    active = np.arange(trials)
    finished = 0
    block = int(min(max(expected_attempts * 1.15 + 6.0 * math.sqrt(expected_attempts) + 8, 16), 2_000_000))
    drawn = 0
    while active.size:
        drawn += active.size * block
        if drawn > 4 * MAX_ATTEMPTS:
            raise UserError(f"the simulation drew {drawn:,} attempts without finishing every run (interruptions "
                            "too frequent for the checkpoint interval); give a shorter --checkpoint-interval")
        rows_per_chunk = max(1, CHUNK_ELEMENTS // block)
        still = []
        for s in range(0, active.size, rows_per_chunk):
            rows = active[s:s + rows_per_chunk]
            m = rows.size
            x, cause, d = sampler.draw(rng, (m, block))
            planned = planned_c[cause]
            w, st, ls = _attempt(x, planned, tau, delta, lag)
            cum = np.cumsum(w, axis=1)
            cum += done_work[rows, None]
            r = work_h - (cum - w)  # work left when the attempt starts
            need = r + np.floor(np.maximum(r, 0.0) / tau) * delta
            fin = need <= x
            has = fin.any(axis=1)
            first = np.where(has, np.argmax(fin, axis=1), block)
            mask = np.arange(block)[None, :] < first[:, None]
            n_int[rows] += first
            down[rows] += (d * mask).sum(axis=1)
            lost[rows] += (ls * mask).sum(axis=1)
            stall[rows] += (st * mask).sum(axis=1)
            wall[rows] += ((x + d) * mask).sum(axis=1)
            flat = (np.arange(m)[:, None] * ncomp + cause)[mask]
            counts[rows] += np.bincount(flat, minlength=m * ncomp).reshape(m, ncomp)
            fr = np.nonzero(has)[0]
            if fr.size:
                rf = np.maximum(r[fr, first[fr]], 0.0)
                stall_end = np.floor(rf / tau) * delta
                wall[rows[fr]] += rf + stall_end
                stall[rows[fr]] += stall_end
            nf = np.nonzero(~has)[0]
            if nf.size:
                done_work[rows[nf]] = cum[nf, -1]
                still.append(rows[nf])
            if progress is not None:
                finished += m - nf.size
                progress(finished, trials)
        active = np.concatenate(still) if still else np.array([], dtype=np.int64)
        block = max(16, block // 4)
    return wall, n_int, counts, lost, down, stall


def _example_run(rng, sampler: _Sampler, planned_c: np.ndarray, ids: list[str], work_h: float, tau: float,
                 delta: float, lag: float, max_attempts: int = 20_000) -> dict[str, Any]:
    """One campaign attempt by attempt, as :func:`_campaign` runs each trial: wall-clock start, hours run,
    durable work, lost work and downtime (hours) and the cause of each interruption; ``end_h`` the wall clock
    at the end (None if cut at ``max_attempts``)."""
    out: dict[str, Any] = {k: [] for k in ("start_h", "run_h", "work_h", "lost_h", "down_h", "cause")}
    t = done = 0.0
    while len(out["cause"]) < max_attempts:
        x, cause, d = sampler.draw(rng, (256,))
        w, _st, ls = _attempt(x, planned_c[cause], tau, delta, lag)
        for i in range(x.size):
            r = work_h - done
            need = r + math.floor(max(r, 0.0) / tau) * delta
            if need <= x[i]:
                out["end_h"], out["last_work_h"] = t + need, r
                return out
            for k, v in (("start_h", t), ("run_h", x[i]), ("work_h", w[i]), ("lost_h", ls[i]), ("down_h", d[i])):
                out[k].append(float(v))
            out["cause"].append(ids[int(cause[i])])
            done += float(w[i])
            t += float(x[i] + d[i])
    out["end_h"] = None
    return out


def _interval_curve(pool, delta: float, lag: float, work_h: float, best_h: float,
                    points: int = 49) -> dict[str, list[float]]:
    """Expected goodput (1 / expected wall time per unit of durable work, on the pool) over a log grid of
    checkpoint intervals around the best, minutes."""
    lo = max(best_h / 30.0, lag - delta + 1e-9, 1.0 / 3600.0)
    hi = max(min(best_h * 30.0, work_h), lo * 1.01)
    grid = np.geomspace(lo, hi, points)
    return {"minutes": [float(t * 60.0) for t in grid],
            "goodput": [1.0 / _expected_ratio(float(t), pool, delta, lag) for t in grid]}


# --------------------------------------------------------------------------------------------- API
def _check_overrides(overrides: dict) -> None:
    bad = sorted(set(overrides) - set(OVERRIDES))
    if bad:
        raise UserError(f"unknown reliability option(s) {', '.join(bad)}; known: {', '.join(sorted(OVERRIDES))}")
    for k, v in overrides.items():    # NaN passes every comparison below unnoticed; infinity hangs the simulation
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            raise UserError(f"{k} must be a finite number, got {v}")
    for k in ("detect_minutes", "restart_minutes", "repair_hours", "stall_seconds", "rate_scale", "step_seconds"):
        v = overrides.get(k)
        if v is not None and (not math.isfinite(float(v)) or float(v) < 0):
            raise UserError(f"{k} must be a non-negative number, got {v}")
    for k, (most, why) in OVERRIDE_MAX.items():
        v = overrides.get(k)
        if v is not None and isinstance(v, (int, float)) and v > most:
            raise UserError(f"{k} must be at most {most:g} ({why}), got {v:g}")
    for k, (least, why) in OVERRIDE_MIN.items():
        v = overrides.get(k)
        if v is not None and isinstance(v, (int, float)) and 0 < v < least:
            raise UserError(f"{k} must be at least {least:g} ({why}), got {v:g}")
    sp = overrides.get("spares")
    if sp is not None and int(sp) < 0:
        raise UserError(f"spares must be a non-negative count of nodes, got {sp}")
    k = overrides.get("weibull_shape")
    if k is not None and float(k) <= 0:
        raise UserError(f"weibull_shape must be positive, got {k}")
    if k is not None and not WEIBULL_SHAPES[0] <= float(k) <= WEIBULL_SHAPES[1]:
        raise UserError(f"weibull_shape must be between {WEIBULL_SHAPES[0]:g} and {WEIBULL_SHAPES[1]:g} (fitted "
                        f"failure data lie between 0.3 and 3), got {k:g}")
    bf = overrides.get("burst_fraction")
    if bf is not None and not 0 <= float(bf) < 1:
        raise UserError(f"burst_fraction must be in [0, 1), got {bf}")
    bm = overrides.get("burst_mean_minutes")
    if bm is not None and float(bm) <= 0:
        raise UserError(f"burst_mean_minutes must be positive, got {bm}")
    dist = overrides.get("distribution")
    if dist is not None and dist not in ("exponential", "weibull", "bursty"):
        raise UserError(f"unknown failure distribution {short(dist)}; use exponential, weibull or bursty")


def _resolve_model(model) -> "ModelSpec | None":
    if model is None or isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        from .. import catalog

        return catalog.model(model)
    raise UserError(f"model must be a ModelSpec or a catalog name, got {type(model).__name__}")


def _daly_statement(dist: str, best_min: float, daly_min: float, g_best: float, g_daly: float, shape: float,
                    bf: float) -> str:
    """One sentence comparing the simulated best interval with Daly's, and why they differ."""
    diff = (best_min / daly_min - 1.0) * 100.0 if daly_min > 0 else 0.0
    loss = (g_best - g_daly) * 100.0
    core = (f"simulated best interval {best_min:.1f} min vs Daly {daly_min:.1f} min ({diff:+.0f}%); expected "
            f"goodput {g_best:.2%} at the best vs {g_daly:.2%} at Daly's ({loss:.2f} points)")
    if dist == "exponential":
        return core + ". Daly's assumptions (exponential failures, fixed costs) hold here."
    if dist == "weibull" and shape < 1:
        why = (f"with Weibull shape {shape:g} < 1 many interruptions come soon after a restart, before a "
               "checkpoint could save much, and a job that outlives them fails less often than the mean says, "
               "so longer intervals pay")
    elif dist == "weibull":
        why = (f"with Weibull shape {shape:g} > 1 the hazard grows with time since the restart (wear-out), "
               "so shorter intervals pay")
    else:
        why = (f"{bf:.0%} of restarts fail again quickly (correlated failures), losing little work; the other "
               "runs last longer than the mean, so longer intervals pay")
    return core + f". Daly assumes exponential failures and sees only the mean; {why}."


def simulate_reliability(n_gpus: int, days: float, profile: "str | Profile" = "llama3-h100",
                         model: "ModelSpec | str | None" = None,
                         checkpoint_interval_minutes: Optional[float] = None, trials: int = 1000, seed: int = 0,
                         progress: Optional[Callable[[int, int], None]] = None,
                         **overrides: Any) -> ReliabilityResult:
    """Simulate a campaign of ``n_gpus`` GPUs needing ``days`` failure-free training days.

    ``checkpoint_interval_minutes`` = training minutes between checkpoints; None searches the best.
    ``overrides`` (see ``OVERRIDES``) replace profile values. Deterministic for a given ``seed``.
    ``progress(trials done, trials)`` is called as the Monte Carlo runs.
    """
    _check_overrides(overrides)
    if not isinstance(n_gpus, (int, np.integer)) or isinstance(n_gpus, bool) or n_gpus <= 0:
        raise UserError(f"GPU count must be a positive integer, got {short(n_gpus)}")
    check_number("--gpus", int(n_gpus), "gpus", integer=True)
    if not isinstance(days, (int, float)) or isinstance(days, bool) or not math.isfinite(days) or days <= 0:
        raise UserError(f"training days must be a positive, finite number, got {short(days)}")
    check_number("--days", days, "days")
    if trials < 1 or trials > 1_000_000:
        raise UserError(f"trials must be between 1 and 1,000,000, got {trials}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 63:
        raise UserError(f"--seed must be a whole number from 0 to 2^63 - 1, got {short(seed)}")
    if checkpoint_interval_minutes is not None and not checkpoint_interval_minutes > 0:
        raise UserError(f"checkpoint interval must be positive minutes, got {checkpoint_interval_minutes}")
    if checkpoint_interval_minutes is not None and not (
            MIN_INTERVAL_MINUTES <= checkpoint_interval_minutes <= days * 24 * 60):
        raise UserError(f"checkpoint interval must be between one second ({MIN_INTERVAL_MINUTES:.4f} min) and the "
                        f"run's {days * 24 * 60:,.0f} training minutes, got {checkpoint_interval_minutes:g}")
    prof = load_profile(profile)
    spec = _resolve_model(model)
    rec = prof.recovery
    o = overrides

    def pick(key, sourced, unit_note=""):
        if o.get(key) is not None:
            return float(o[key]), "user option"
        return sourced.value, sourced.source

    detect_min, detect_src = pick("detect_minutes", rec.detect_minutes)
    restart_min, restart_src = pick("restart_minutes", rec.restart_minutes)
    repair_h, repair_src = pick("repair_hours", rec.repair_hours)
    spares = None if o.get("spares") is None else int(o["spares"])
    rate_scale = float(o["rate_scale"]) if o.get("rate_scale") is not None else 1.0
    rates = job_rates(prof, int(n_gpus), rate_scale)

    ck = checkpoint_cost(spec, int(n_gpus), prof, precision=o.get("precision") or "bf16",
                         mode=o.get("checkpoint_mode"), optimizer=o.get("optimizer") or "adam",
                         weights_only=bool(o.get("weights_only", False)), shards=o.get("shards"),
                         write_gbs=o.get("write_gbs"), read_gbs=o.get("read_gbs"), node_gbs=o.get("node_gbs"))
    stall_s = float(o["stall_seconds"]) if o.get("stall_seconds") is not None else ck.stall_s
    delta, lag = stall_s / 3600.0, ck.durable_lag_s / 3600.0

    dist = o.get("distribution") or prof.distribution.kind
    shape = float(o.get("weibull_shape") or prof.distribution.weibull_shape)
    bf = float(o["burst_fraction"]) if o.get("burst_fraction") is not None else prof.distribution.burst_fraction
    bm_h = float(o.get("burst_mean_minutes") or prof.distribution.burst_mean_minutes) / 60.0

    read_h = ck.read_s / 3600.0
    planned_c = rates.planned
    down_h = np.where(planned_c, restart_min / 60.0 + read_h, (detect_min + restart_min) / 60.0 + read_h)
    p_short = spare_shortage_probability(rates.hardware_rate, repair_h, spares)
    hw = rates.hardware & ~planned_c
    sampler = _Sampler(rates, dist, shape, bf, bm_h, down_h, hw, p_short, repair_h, spares)

    work_h = float(days) * 24.0
    mttf = rates.mttf_hours
    m_for_formula = mttf if math.isfinite(mttf) else 1e15
    # an interval longer than the whole run means "never": cap the formulas at the run's work
    young_h, daly_h = min(young(delta, m_for_formula), work_h), min(daly(delta, m_for_formula), work_h)
    exact_h = min(exponential_optimum(delta, m_for_formula), work_h) if delta > 0 else 0.0

    pool_rng = np.random.default_rng([seed, 1])
    px, pc, pd = sampler.draw(pool_rng, (POOL,))
    pplan = planned_c[pc]
    pool = (px[~pplan], px[pplan], float(px.sum() + pd.sum()))
    guess = max(daly_h, young_h, lag, 1.0 / 60.0)
    best_h = min(_search(pool, delta, lag, work_h, guess), work_h)
    step_h = float(o["step_seconds"]) / 3600.0 if o.get("step_seconds") else 0.0
    if step_h > 0:  # a whole number of steps, at least one, and long enough for the previous save to land
        k_min = max(1, math.ceil((lag - delta) / step_h - 1e-12))
        ks = {max(k_min, math.floor(best_h / step_h)), max(k_min, math.ceil(best_h / step_h))}
        best_h = min((k * step_h for k in ks), key=lambda t: _expected_ratio(t, pool, delta, lag))
    tau_daly = max(daly_h, lag - delta + 1e-9, 1e-9)
    g_best = 1.0 / _expected_ratio(best_h, pool, delta, lag)
    g_daly = 1.0 / _expected_ratio(tau_daly, pool, delta, lag)

    if checkpoint_interval_minutes is None:
        tau, searched = best_h, True
    else:
        tau, searched = float(checkpoint_interval_minutes) / 60.0, False
        if tau + delta < lag:
            raise UserError(f"checkpoint interval {checkpoint_interval_minutes:g} min is shorter than the time a "
                            f"checkpoint takes to become durable ({ck.durable_lag_s / 60:.1f} min)")

    # the cost of the simulation: trials x attempts per trial, bounded (a run that cannot finish, or would
    # draw more than MAX_ATTEMPTS attempts, is refused; past that, fewer trials are run and a note says so)
    g_tau = 1.0 / _expected_ratio(tau, pool, delta, lag)
    if g_tau < 1e-3:
        raise UserError(f"with a checkpoint every {tau * 60:.4g} min the job would almost never keep its work "
                        f"(expected goodput {g_tau:.2%}); the best interval here is {best_h * 60:.1f} min")
    exp_attempts = work_h / max(min(g_best, g_tau), 0.05) / sampler.mean + 1.0
    notes: list[str] = []
    if exp_attempts > MAX_ATTEMPTS:
        raise UserError(f"{n_gpus:,} GPUs for {days:g} days would see about {exp_attempts:,.0f} interruptions per "
                        f"run; megacluster simulates at most {MAX_ATTEMPTS:,} (fewer --days or --gpus)")
    if trials * exp_attempts > MAX_ATTEMPTS:
        fewer = max(1, int(MAX_ATTEMPTS // exp_attempts))
        notes.append(f"{fewer:,} trials instead of {trials:,}: each run sees about {exp_attempts:,.0f} "
                     f"interruptions and a simulation draws at most {MAX_ATTEMPTS:,}")
        trials = fewer
    rng = np.random.default_rng([seed, 2])
    wall, n_int, counts, lost, down, stall = _campaign(rng, sampler, planned_c, len(rates.ids), int(trials),
                                                       work_h, tau, delta, lag, exp_attempts, progress)
    goodput = work_h / wall
    mean_counts = counts.mean(axis=0)
    by_cause = {cid: float(v) for cid, v in zip(rates.ids, mean_counts)}
    by_group: dict[str, float] = {}
    for g, v in zip(rates.groups, mean_counts):
        by_group[g] = by_group.get(g, 0.0) + float(v)
    unexpected = float(mean_counts[~planned_c].sum())
    gpu_n = float(mean_counts[np.array([g == "gpu" for g in rates.groups]) & ~planned_c].sum())
    hw_n = float(mean_counts[hw].sum())

    if o.get("distribution") is not None:
        dist_src = "user option"
    else:
        dist_src = prof.distribution.source or "profile default"
    anchors = [{"gpus": a.gpus, "published_mttf_hours": a.mttf_hours, "kind": a.kind,
                "model_mttf_hours": job_rates(prof, a.gpus).mttf_hours, "source": a.source} for a in prof.anchors]
    assumptions = {
        "failure distribution": Sourced(value=dist if dist != "weibull" else f"weibull k={shape:g}",
                                        source=dist_src),
        "detect minutes": Sourced(value=detect_min, source=detect_src),
        "restart minutes": Sourced(value=restart_min, source=restart_src),
        "checkpoint read minutes": Sourced(value=round(ck.read_s / 60.0, 3),
                                           source="computed: checkpoint bytes / read bandwidth"),
        "checkpoint stall seconds": Sourced(value=round(stall_s, 3), source="user option" if "stall_seconds" in o
                                            else f"computed ({ck.mode} checkpoint)"),
        "checkpoint parameters": Sourced(value=ck.params, source=(spec.source or f"model {spec.name}") if spec
                                         else prof.checkpoint.params.source),
        "checkpoint bytes per parameter": Sourced(value=ck.bytes_per_param, source="weights + fp32 master + "
                                                  "optimizer state (ZeRO, Rajbhandari et al. 2020)"),
        "storage write GB/s": Sourced(value=prof.storage.write_gbs.value if o.get("write_gbs") is None
                                      else o["write_gbs"], source=prof.storage.write_gbs.source
                                      if o.get("write_gbs") is None else "user option"),
        "repair hours": Sourced(value=repair_h, source=repair_src),
        "hot spares": Sourced(value=spares if spares is not None else "unlimited",
                              source="user option" if spares is not None else
                              "default: a replacement node is always free"),
        "failures during restarts": Sourced(value="ignored", source="model simplification"),
        "cause of each interruption": Sourced(value="independent of time, in proportion to the rates",
                                              source="model simplification"),
    }
    return ReliabilityResult(
        profile=prof.id, n_gpus=int(n_gpus), training_days=float(days), trials=int(trials), seed=int(seed),
        distribution=dist,
        interruptions_mean=float(n_int.mean()), interruptions_p95=float(np.percentile(n_int, 95)),
        unexpected_interruptions_mean=unexpected, planned_interruptions_mean=float(mean_counts[planned_c].sum()),
        by_cause=by_cause, by_group=by_group,
        gpu_share=gpu_n / unexpected if unexpected else 0.0, hardware_share=hw_n / unexpected if unexpected else 0.0,
        mttf_hours=mttf if math.isfinite(mttf) else None,
        mtbi_hours=rates.mtbi_hours if math.isfinite(rates.mtbi_hours) else None,
        goodput_mean=float(goodput.mean()), goodput_p5=float(np.percentile(goodput, 5)),
        goodput_p95=float(np.percentile(goodput, 95)),
        wall_clock_days_mean=float(wall.mean() / 24.0), wall_clock_days_p5=float(np.percentile(wall, 5) / 24.0),
        wall_clock_days_p95=float(np.percentile(wall, 95) / 24.0),
        lost_work_hours_mean=float(lost.mean()), restart_hours_mean=float(down.mean()),
        checkpoint_stall_hours_mean=float(stall.mean()),
        checkpoint=ck, checkpoint_interval_minutes=tau * 60.0, interval_searched=searched,
        best_interval_minutes=best_h * 60.0, young_minutes=young_h * 60.0, daly_minutes=daly_h * 60.0,
        exponential_optimum_minutes=exact_h * 60.0, goodput_expected_at_best=g_best,
        goodput_expected_at_daly=g_daly,
        daly_comparison=_daly_statement(dist, best_h * 60.0, daly_h * 60.0, g_best, g_daly, shape, bf),
        spares=spares, spare_shortage_probability=p_short,
        spares_needed=spares_needed(rates.hardware_rate, repair_h),
        anchors=anchors, assumptions=assumptions, notes=notes,
        interval_curve=_interval_curve(pool, delta, lag, work_h, best_h),
        example_run={**_example_run(np.random.default_rng([seed, 3]), sampler, planned_c, list(rates.ids), work_h,
                                    tau, delta, lag), "profile": prof.id},
    )
