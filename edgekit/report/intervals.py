"""95% intervals for differences between variants, so a report ranks by evidence instead of noise.

Accuracy differences are differences of proportions (top-1, agreement: the share of images a
variant gets right). Two variants scored on the *same* images are paired: most images are right
(or wrong) for both, and only the discordant ones carry information, so the paired interval
(Newcombe's square-and-add method with the correlation correction, 1998) is much narrower than
the unpaired one. Variants scored on different images get Newcombe's hybrid Wilson score
interval for independent proportions (1998, method 10). Both are closed forms: same counts, same
interval. Latency ratios get a seeded bootstrap of the ratio of medians.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from edgekit.bench.stats import bootstrap_medians

Z95 = 1.959963984540054  # the normal quantile of 0.975


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (good at 0%, 100% and small n, unlike the Wald one)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n and n > 0, got {successes}/{n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def unpaired_difference(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float]:
    """Interval of p2 - p1 for proportions k1/n1 and k2/n2 measured on different samples
    (Newcombe's hybrid score interval)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, z)
    l2, u2 = wilson(k2, n2, z)
    d = p2 - p1
    return max(-1.0, d - math.hypot(p2 - l2, u1 - p1)), min(1.0, d + math.hypot(u2 - p2, p1 - l1))


def paired_difference(both: int, only_first: int, only_second: int, neither: int,
                      z: float = Z95) -> tuple[float, float]:
    """Interval of p2 - p1 for two proportions measured on the same items: ``both`` items are
    successes for both, ``only_first`` for the first only, and so on (Newcombe's square-and-add
    interval for paired proportions, with the continuity-corrected correlation)."""
    n = both + only_first + only_second + neither
    if n <= 0 or min(both, only_first, only_second, neither) < 0:
        raise ValueError(f"paired_difference: need non-negative counts and n > 0, got {both, only_first, only_second, neither}")
    k1, k2 = both + only_first, both + only_second
    p1, p2 = k1 / n, k2 / n
    l1, u1 = wilson(k1, n, z)
    l2, u2 = wilson(k2, n, z)
    margins = k1 * (n - k1) * k2 * (n - k2)
    cross = both * neither - only_first * only_second
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    d = p2 - p1
    lower = d - math.sqrt(max(0.0, (p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2))
    upper = d + math.sqrt(max(0.0, (u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def paired_counts(first: np.ndarray, second: np.ndarray) -> tuple[int, int, int, int]:
    """(both, only first, only second, neither) of two boolean per-item vectors in the same item order."""
    a, b = np.asarray(first, bool), np.asarray(second, bool)
    return int(np.sum(a & b)), int(np.sum(a & ~b)), int(np.sum(~a & b)), int(np.sum(~a & ~b))


def ratio_of_medians(numerator_ms: Sequence[float], denominator_ms: Sequence[float], seed: int = 0,
                     resamples: int = 2000) -> tuple[float, list[float]]:
    """median(numerator) / median(denominator) and its bootstrap 95% interval; the two samples
    are resampled independently (different processes, different moments)."""
    num = bootstrap_medians(numerator_ms, seed=seed, resamples=resamples)
    den = bootstrap_medians(denominator_ms, seed=seed + 1, resamples=resamples)
    ratios = num / den
    point = float(np.median(numerator_ms) / np.median(denominator_ms))
    return point, [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def verdict(ci: Sequence[float] | None, higher_is_better: bool = True) -> str | None:
    """"better"/"worse" when the whole interval of a difference is on one side of 0, else "no measurable difference"."""
    if ci is None:
        return None
    lo, hi = ci
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return "no measurable difference"


def score_difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any] | None:
    """``b``'s score minus ``a``'s, in percentage points, with its 95% interval: paired when both
    were evaluated on the same images in the same order, else unpaired. ``a`` and ``b`` are report
    rows (``metric``, ``score``, ``per_item``); None when they rank by different metrics or either
    lacks the per-item outcomes of its metric (without them the interval cannot be honest)."""
    metric = a.get("metric")
    if metric is None or metric != b.get("metric") or a.get("score") is None or b.get("score") is None:
        return None
    bits_a, bits_b = outcome_bits(a, metric), outcome_bits(b, metric)
    if bits_a is None or bits_b is None:
        return None
    same_images = a["per_item"]["data_id"] == b["per_item"]["data_id"] and len(bits_a) == len(bits_b)
    if same_images:
        lo, hi = paired_difference(*paired_counts(bits_a, bits_b))
    else:
        lo, hi = unpaired_difference(int(bits_a.sum()), len(bits_a), int(bits_b.sum()), len(bits_b))
    delta = 100.0 * (bits_b.mean() - bits_a.mean())
    return {"delta": float(delta), "ci95": [100.0 * lo, 100.0 * hi], "paired": same_images}


def outcome_bits(row: dict[str, Any], metric: str) -> np.ndarray | None:
    """The per-item booleans of ``metric`` in a row's ``per_item`` record (validated on reading), if any."""
    from edgekit.tasks.items import decode_bits

    items = row.get("per_item")
    if not items or not isinstance(items.get(metric), str):
        return None
    return decode_bits(items[metric], items["count"])
