"""The slowest of N GPUs: a synchronous step waits for its slowest rank.

Identical GPUs do not run at identical speed (manufacturing variation under the chip's power management). If
each GPU's compute speed is spread around its mean with a relative standard deviation ``spread``, a step in
which all N ranks must finish takes the time of the slowest: on average the mean time x (1 + spread x e(N)),
with e(N) the expected largest of N standard normal draws. e(N) uses Blom's approximation of the expected
order statistic, inv_Phi((N - 0.375) / (N + 0.25)): 0 for one GPU, 1.42 for 8, 3.03 for 512, 3.98 for 16,384.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

# e(N) tabulated on a log grid of N (1 .. 2^24) and interpolated in log N
_LOG_N = np.linspace(0.0, 24.0 * np.log(2.0), 385)
_E_MAX = np.array([NormalDist().inv_cdf((n - 0.375) / (n + 0.25)) for n in np.exp(_LOG_N)])


def expected_max_normal(n):
    """Expected largest of ``n`` standard normal draws (Blom's approximation); 0 for n <= 1. Broadcasts."""
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    return np.interp(np.log(n), _LOG_N, _E_MAX)


def slowest_rank_factor(n_gpus, spread):
    """Time of the slowest of ``n_gpus`` ranks relative to the mean rank, for a relative speed spread
    ``spread`` (standard deviation as a fraction of the mean): 1 + spread x e(n_gpus)."""
    return 1.0 + float(spread) * expected_max_normal(n_gpus)
