"""Failure rates of one job: per component, scaled by the job's size; hot-spare availability.

A job of ``n_gpus`` GPUs on nodes of ``gpus_per_node`` sees each component's rate times its device count
(GPUs, nodes, or 1 for job-level causes). Rates are per wall-clock hour of the job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .profiles import Profile


@dataclass(frozen=True)
class JobRates:
    """Interruption rates of one job, per hour, by component (arrays aligned with ``ids``)."""

    ids: list[str]
    names: list[str]
    groups: list[str]
    hardware: np.ndarray  # bool
    planned: np.ndarray  # bool
    per_hour: np.ndarray  # interruptions per job-hour

    @property
    def total(self) -> float:
        """All interruptions per hour (planned included)."""
        return float(self.per_hour.sum())

    @property
    def unexpected(self) -> float:
        """Unplanned interruptions (failures) per hour."""
        return float(self.per_hour[~self.planned].sum())

    @property
    def hardware_rate(self) -> float:
        """Failures that take a node out of service, per hour."""
        return float(self.per_hour[self.hardware & ~self.planned].sum())

    @property
    def mttf_hours(self) -> float:
        """Mean time to (unexpected) failure, hours."""
        return 1.0 / self.unexpected if self.unexpected > 0 else math.inf

    @property
    def mtbi_hours(self) -> float:
        """Mean time between interruptions of any kind, hours."""
        return 1.0 / self.total if self.total > 0 else math.inf


def job_rates(profile: Profile, n_gpus: int, rate_scale: float = 1.0) -> JobRates:
    """Rates per job-hour of every component for a job of ``n_gpus`` GPUs.

    ``rate_scale`` multiplies every unplanned rate (a what-if: 0.5 = a fleet twice as reliable).
    """
    nodes = math.ceil(n_gpus / profile.gpus_per_node)
    devices = {"gpu": float(n_gpus), "node": float(nodes), "job": 1.0}
    comps = profile.components
    planned = np.array([c.planned for c in comps])
    rate = np.array([profile.rate_per_device_hour(c) * devices[c.per] for c in comps])
    rate = np.where(planned, rate, rate * rate_scale)
    return JobRates(ids=[c.id for c in comps], names=[c.name for c in comps], groups=[c.group for c in comps],
                    hardware=np.array([c.hardware for c in comps]), planned=planned, per_hour=rate)


def mttf_hours(profile: Profile, n_gpus: int) -> float:
    """Mean time to an unexpected failure of a job of ``n_gpus`` GPUs, hours."""
    return job_rates(profile, n_gpus).mttf_hours


def _poisson_pmf(i: int, mean: float) -> float:
    """P(Poisson(mean) = i), in log space (exp(-mean) underflows to 0 past a mean of about 745)."""
    if mean <= 0:
        return 1.0 if i == 0 else 0.0
    return math.exp(i * math.log(mean) - mean - math.lgamma(i + 1))


def _poisson_tail_end(mean: float) -> float:
    """A count past which P(Poisson(mean) >= k) is below 1e-30 (40 standard deviations and a margin)."""
    return mean + 40.0 * math.sqrt(mean) + 100.0


def _poisson_sf(k: int, mean: float) -> float:
    """P(Poisson(mean) >= k)."""
    if k <= 0:
        return 1.0
    if k > _poisson_tail_end(mean):
        return 0.0
    cdf = math.fsum(_poisson_pmf(i, mean) for i in range(k))
    return max(0.0, 1.0 - cdf)


def spare_shortage_probability(hardware_per_hour: float, repair_hours: float, spares: int | None) -> float:
    """Probability that a hardware failure finds no hot spare node free.

    Nodes under repair form an M/G/infinity queue: their number is Poisson with mean (hardware failure rate x
    repair time); a failure finds every spare taken when that number is at least ``spares`` (PASTA).
    ``spares=None`` means an unlimited pool (0).
    """
    if spares is None:
        return 0.0
    return _poisson_sf(int(spares), hardware_per_hour * repair_hours)


def spares_needed(hardware_per_hour: float, repair_hours: float, shortage: float = 0.01) -> int:
    """Smallest hot-spare pool (nodes) for which a hardware failure waits for a repair less than
    ``shortage`` of the time."""
    mean = hardware_per_hour * repair_hours
    cdf, s = 0.0, 1                           # a failure always finds no spare free when there are none
    while s <= _poisson_tail_end(mean):       # one pass: cdf = P(count <= s - 1), shortage(s) = 1 - cdf
        cdf += _poisson_pmf(s - 1, mean)
        if 1.0 - cdf < shortage:
            return s
        s += 1
    return s
