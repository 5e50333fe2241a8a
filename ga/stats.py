"""Small statistics the reports share: a proportion's interval and weighted size percentiles."""

from __future__ import annotations

from typing import Mapping, Sequence

import math

import numpy as np


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k / n at `level` (SciPy's binomtest);
    (nan, nan) when n is 0."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


def weighted_percentiles(values: Sequence[float], weights: Sequence[float] | None,
                         quantiles: Sequence[float]) -> list[float]:
    """Percentiles of `values` where each value counts with its weight (None: equally), by
    the inverted weighted distribution function (NumPy's "inverted_cdf"); nan when empty.

    d10, d50, d90 of a number-weighted size distribution are
    `weighted_percentiles(d, None, [0.1, 0.5, 0.9])`; of a volume-weighted one, weights d**3.
    """
    v = np.asarray(values, np.float64)
    if not len(v):
        return [float("nan")] * len(quantiles)
    w = None if weights is None else np.asarray(weights, np.float64)
    if w is not None and not w.sum() > 0:
        return [float("nan")] * len(quantiles)
    return [float(q) for q in np.percentile(v, [100 * q for q in quantiles], method="inverted_cdf", weights=w)]


def with_ci(value: float | None, ci: Sequence[float] | None, digits: int = 4) -> str:
    """`0.9833 (0.9571–0.9951)`; the value alone without an interval; "undefined" for None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    text = f"{value:.{digits}f}"
    return f"{text} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})" if ci else text


def shown(node: Mapping, key: str, digits: int = 4) -> str:
    """`node[key]` with the interval stored beside it (`<key>_ci`), as with_ci writes it."""
    return with_ci(node.get(key), node.get(f"{key}_ci"), digits)
