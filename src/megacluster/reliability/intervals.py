"""Closed-form checkpoint intervals: Young (1974), Daly (2006) and the exact optimum of the exponential model.

``delta`` = checkpoint cost (training stall per checkpoint) and ``mtbf`` = mean time between failures, both in
the same unit; the interval returned is the compute time between checkpoints, in that unit.
"""

from __future__ import annotations

import math


def young(delta: float, mtbf: float) -> float:
    """Young, CACM 17(9), 1974: tau = sqrt(2 delta M)."""
    return math.sqrt(2.0 * delta * mtbf)


def daly(delta: float, mtbf: float) -> float:
    """Daly, FGCS 22(3):303-312, 2006, higher-order estimate:
    tau = sqrt(2 delta M) [1 + (1/3) sqrt(delta / 2M) + (1/9) (delta / 2M)] - delta for delta < 2M, else M."""
    if delta >= 2.0 * mtbf:
        return mtbf
    x = delta / (2.0 * mtbf)
    return math.sqrt(2.0 * delta * mtbf) * (1.0 + math.sqrt(x) / 3.0 + x / 9.0) - delta


def exponential_optimum(delta: float, mtbf: float) -> float:
    """Exact optimum of the model Daly approximates (exponential failures, fixed costs, restarts renew):
    minimise (exp((tau + delta)/M) - 1) / tau, i.e. solve (1 - tau/M) exp((tau + delta)/M) = 1 on (0, M)."""
    lo, hi = 0.0, mtbf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (1.0 - mid / mtbf) * math.exp((mid + delta) / mtbf) - 1.0 > 0.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
