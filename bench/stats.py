"""Small helpers for figures: percentiles, ratios, human units."""

from __future__ import annotations

import math


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples`` (``fraction`` in 0..1)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(samples: list[float]) -> float:
    return percentile(samples, 0.5)


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(denominator) or math.isnan(numerator):
        return math.nan
    return numerator / denominator


def milliseconds(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000
    if value >= 100:
        return f"{value:,.0f} ms"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.3f} ms"


def per_second(rate: float, unit: str = "lines") -> str:
    return "n/a" if math.isnan(rate) else f"{rate:,.0f} {unit}/s"


def times(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}x"
    return f"{value:.2f}x"


def mebibytes(count: float) -> str:
    return "n/a" if math.isnan(count) else f"{count / 2**20:,.1f} MiB"


def signed_mebibytes(count: float) -> str:
    return "n/a" if math.isnan(count) else f"{count / 2**20:+,.1f} MiB"


def lines_label(count: int) -> str:
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return str(count)
