"""Statistics without scipy: Student's t (exact, integer df), Holm–Bonferroni, Wilson
intervals, and a sample's mean ± sample std."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


def _t_central(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with an integer number of degrees of freedom, by the exact
    finite series of Abramowitz & Stegun 26.7.3 (odd df) and 26.7.4 (even df)."""
    theta = math.atan(t / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2:
        term = total = math.cos(theta) if df > 1 else 0.0
        for k in range(3, df - 1, 2):
            term *= (k - 1) / k * cos2
            total += term
        return 2 / math.pi * (theta + sin * total)
    term = total = 1.0
    for k in range(2, df - 1, 2):
        term *= (k - 1) / k * cos2
        total += term
    return sin * total


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|): the p-value of a two-sided t test."""
    return max(0.0, 1.0 - _t_central(abs(t), df)) if math.isfinite(t) else 0.0


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the order given: the i-th smallest is multiplied by
    (m − i + 1), and no adjusted value is below one ranked before it. Rejecting those < α keeps the
    family-wise error at α for any dependence between the tests."""
    m, adjusted, running = len(pvalues), [math.nan] * len(pvalues), 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t (p in (0.5, 1), integer df >= 1), by bisection on `_t_central`;
    scipy is not a dependency, and a sample of seeds always has an integer df."""
    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    target, low, high = 2 * p - 1, 0.0, 1.0
    while _t_central(high, df) < target:
        high *= 2
    while high - low > 1e-12 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if _t_central(mid, df) < target else (low, mid)
    return (low + high) / 2


@dataclass(frozen=True)
class Stats:
    n: int
    mean: float  # nan when n == 0
    std: float  # sample standard deviation (ddof=1); nan when n < 2

    @classmethod
    def of(cls, values: Iterable[float]) -> Stats:
        data = np.asarray(list(values), dtype=float)
        data = data[~np.isnan(data)]
        n = len(data)
        return cls(n, float(data.mean()) if n else math.nan, float(data.std(ddof=1)) if n > 1 else math.nan)

    def ci(self, level: float = 0.95) -> tuple[float, float] | None:
        """mean ± t_{(1+level)/2, n−1} · sd / √n; undefined for fewer than two values."""
        if self.n < 2 or not math.isfinite(self.std):
            return None
        half = t_quantile(0.5 + level / 2, self.n - 1) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half


Z_95 = 1.959963984540054  # standard normal 0.975 quantile


def wilson(p: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Wilson score interval for a proportion p observed on n cases: the test-sample
    noise of an accuracy measured on n test examples."""
    scale = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
