"""The rule every bootstrap here applies to resamples on which a statistic is undefined.

A resample may have no estimate: SNIPS on a resample holding no round with target weight is
0/0, a top-10% spend share on a resample that drew no spender is 0/0. Over a small share of
such resamples the interval is conditional on the estimate being defined, which moves it
little; beyond :data:`MAX_UNDEFINED_SHARE` it would describe another experiment, so it is an
error rather than an interval (or a NaN one).
"""

from __future__ import annotations

import numpy as np

MAX_UNDEFINED_SHARE = 0.05


def defined_resamples(dist: np.ndarray, name: str, why_undefined: str = "") -> np.ndarray:
    """The resampled values of ``dist`` that are defined (not NaN).

    Raises:
        ValueError: more than :data:`MAX_UNDEFINED_SHARE` of them are NaN; the message names
            ``name`` and the counts, and adds ``why_undefined`` when given.
    """
    dist = np.asarray(dist, dtype=float)
    undefined = np.isnan(dist)
    n_undefined = int(undefined.sum())
    if n_undefined > MAX_UNDEFINED_SHARE * dist.size:
        raise ValueError(
            f"{name}: {n_undefined} of {dist.size} bootstrap resamples have no estimate"
            f"{'; ' + why_undefined if why_undefined else ''}"
        )
    return dist[~undefined]
