"""Pipeline-parallel schedules: the bubble.

1F1B (PipeDream-Flush, Narayanan et al. 2021 section 2.2): bubble fraction (p-1)/m of the ideal time for
m micro-batches on p stages. Interleaved 1F1B with v model chunks per GPU: (p-1)/(v m).
DualPipe (DeepSeek-V3 report, Table 2): bubble (p/2 - 1)(F&B + B - 3W), about half of 1F1B's for the same
stage times; modelled as (p/2 - 1)/m.
"""

from __future__ import annotations

import numpy as np


def bubble_fraction(pp, n_microbatches, vp=1, schedule: str = "1f1b"):
    """Idle time of the pipeline divided by the ideal (bubble-free) time."""
    pp = np.asarray(pp, dtype=float)
    m = np.maximum(np.asarray(n_microbatches, dtype=float), 1)
    if schedule == "dualpipe":
        return np.maximum(pp / 2 - 1, 0) / m
    return (pp - 1) / (np.asarray(vp, dtype=float) * m)
