"""Latency statistics that tell the truth on a noisy machine.

Besides the usual percentiles, the median gets a bootstrap 95% confidence interval: two variants
whose intervals overlap are reported as "no measurable difference" instead of being ranked by
noise. A high coefficient of variation or a loaded machine is flagged, never hidden.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CV_NOISY = 0.10
BUSY_NOISY = 0.25


def summarize(latencies_s: Sequence[float], seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """min/p50/p90/p99/mean/std (ms), CV, and a bootstrap 95% CI of the p50."""
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no latencies")
    medians = bootstrap_medians(ms, seed, resamples)
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    return {
        "min": float(ms.min()), "p50": float(np.percentile(ms, 50)), "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)), "mean": mean, "std": std, "cv": std / mean if mean else 0.0,
        "p50_ci95": [float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))],
        "runs": int(ms.size),
    }


def bootstrap_medians(values: Sequence[float], seed: int = 0, resamples: int = 2000) -> np.ndarray:
    """Medians of ``resamples`` seeded resamples of ``values`` (with replacement): the spread of the
    median that one sample of this size allows, for its CI and for ratios of two medians."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return np.median(rng.choice(values, size=(resamples, values.size), replace=True), axis=1)


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    """``a`` against ``b`` by p50: "faster", "slower" or "no measurable difference" (CIs overlap)."""
    (a_lo, a_hi), (b_lo, b_hi) = a["p50_ci95"], b["p50_ci95"]
    if a_hi < b_lo:
        return "faster"
    if a_lo > b_hi:
        return "slower"
    return "no measurable difference"


def noise_reasons(stats: dict[str, Any], busy_before: float | None, temp_before: float | None,
                  temp_after: float | None) -> list[str]:
    reasons = []
    if stats["cv"] > CV_NOISY:
        reasons.append(f"coefficient of variation {stats['cv']:.0%} > {CV_NOISY:.0%}")
    if busy_before is not None and busy_before > BUSY_NOISY:
        reasons.append(f"CPUs {busy_before:.0%} busy with other work just before the run")
    if temp_before is not None and temp_after is not None and temp_after - temp_before > 10:
        reasons.append(f"temperature rose {temp_after - temp_before:.0f} C during the run (throttling likely)")
    return reasons
