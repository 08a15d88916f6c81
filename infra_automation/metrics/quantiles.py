"""Percentiles and ratios of the figures.

Percentiles are *nearest rank*: p-th percentile of n sorted values is the value at rank
``ceil(p / 100 * n)`` (1-based) — always a value that was measured, exact on small samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spread:
    """Count, p50, p95, mean and total of a set of durations (seconds); None when empty."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    mean: float | None = None
    total: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p95": self.p95,
            "mean": self.mean,
            "total": self.total,
        }


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile ``p`` (0 < p <= 100) of ``values`` (None when empty)."""
    if not values:
        return None
    return _ranked(sorted(values), p)


def _ranked(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` of ``ordered`` (sorted, not empty)."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def spread(values: Sequence[float]) -> Spread:
    """The spread of ``values`` (sorted once; summed in the order given)."""
    if not values:
        return Spread()
    ordered = sorted(values)
    total = float(sum(values))
    return Spread(
        count=len(values),
        p50=_ranked(ordered, 50),
        p95=_ranked(ordered, 95),
        mean=total / len(values),
        total=total,
    )


def ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
