"""Pipeline-parallel schedules: the bubble.

1F1B (PipeDream-Flush, Narayanan et al. 2021 section 2.2): bubble fraction (p-1)/m of the ideal time for
m micro-batches on p stages. Interleaved 1F1B with v model chunks per GPU: (p-1)/(v m) when m >= p. With
fewer micro-batches than stages (Meta's flexible schedule allows it, Llama 3 paper section 3.3.2) the m
micro-batches cannot fill the ring: each of the v-1 returns to the first rank waits p-m chunk times, so the
idle time is (v-1)(p-m) + (p-1) chunk times against m v of work: (p-m)/m + (m-1)/(v m), which is
(p-1)/(v m) at m = p and (p-1)/m at v = 1.
DualPipe (DeepSeek-V3 report, Table 2): bubble (p/2 - 1)(F&B + B - 3W), about half of 1F1B's for the same
stage times; modelled as (p/2 - 1)/m. Each rank holds two stages (i and p-1-i, "Parameter 2x") and runs one of
them per micro-batch.
DualPipeV (the "cut-in-half" DualPipe that PyTorch ships as ScheduleDualPipeV; DeepSeek's DualPipe repository
tabulates it beside DualPipe): p ranks hold 2p stages in a V (rank r: r and 2p-1-r), no copies; DualPipe's
bubble for 2p stages, (p - 1)(F&B + B - 3W) in stage times, against 2 stage times of work per micro-batch on
each rank: modelled as (p - 1)/(2m).
ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism", arXiv 2401.10241 section 3): splitting the backward
into input- and weight-gradient passes and deferring the weight pass fills the 1F1B bubble to (p-1)(T_F + T_B
- T_W); with the three passes taking equal time that is 1/3 of 1F1B's (p-1)(T_F + T_B + T_W), at 1F1B's peak
memory: modelled as (p-1)/(3m).
"""

from __future__ import annotations

import numpy as np


def bubble_fraction(pp, n_microbatches, vp=1, schedule: str = "1f1b"):
    """Idle time of the pipeline divided by the ideal (bubble-free) time."""
    pp = np.asarray(pp, dtype=float)
    m = np.maximum(np.asarray(n_microbatches, dtype=float), 1)
    if schedule == "dualpipe":
        return np.maximum(pp / 2 - 1, 0) / m
    if schedule == "dualpipe-v":
        return np.maximum(pp - 1, 0) / (2.0 * m)
    if schedule == "zb-h1":
        return np.maximum(pp - 1, 0) / (3.0 * m)
    v = np.asarray(vp, dtype=float)
    return np.where(m >= pp, (pp - 1) / (v * m), (pp - m) / m + (m - 1) / (v * m))
