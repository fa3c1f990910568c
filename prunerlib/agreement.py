"""Do two pruning criteria pick the same units? Jaccard overlap of their removal sets and
Spearman rank correlation of their scores (numpy only: scipy is not a dependency)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd


def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|a ∩ b| / |a ∪ b|; NaN when both are empty (nothing removed: no overlap to speak of)."""
    a, b = set(a), set(b)
    union = a | b
    return len(a & b) / len(union) if union else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the average ranks (ties share their mean rank).
    NaN when either side is constant (APoZ of sigmoid units, which are never exactly 0)."""
    rx = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / denominator) if denominator > 0 else math.nan


def lowest(order: np.ndarray, count: int) -> set[int]:
    """The `count` first of a removal order (lowest score first)."""
    return set(order[:count].tolist())


def pair_rows(scores: dict[str, np.ndarray], orders: dict[str, np.ndarray], counts: dict[float, int],
              ) -> list[dict[str, object]]:
    """For every pair of criteria of one layer and every fraction: the Jaccard overlap of the
    sets each removes at that fraction, and the Spearman correlation of their scores (the same
    at every fraction: the scores do not depend on it)."""
    names = sorted(scores)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            rho = spearman(scores[a], scores[b])
            for fraction, count in counts.items():
                rows.append({"criterion_a": a, "criterion_b": b, "fraction": fraction, "removed": count,
                             "jaccard": jaccard(lowest(orders[a], count), lowest(orders[b], count)),
                             "spearman": rho})
    return rows


def reference_rows(name: str, removed: list[int], width: int, orders: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """A method that decides its own count (distinctiveness at its cutoff) against each
    criterion's lowest-scoring units of the same count: Jaccard only (it scores pairs, not units)."""
    count = len(removed)
    return [{"criterion_a": name, "criterion_b": other, "fraction": count / width, "removed": count,
             "jaccard": jaccard(removed, lowest(orders[other], count)), "spearman": math.nan}
            for other in sorted(orders)]
