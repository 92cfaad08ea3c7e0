"""What to ship: one variant per (runtime, target @ host) group, and the order the report lists rows in.

The rule (the report states it next to the answer): within each group, ship the *fastest* variant
(lowest p50) whose ranking metric (the task's primary metric, top-1 for classification) is at most
:data:`TOLERANCE` points worse than the baseline's. A group is one runtime on one machine because that
is the unit a deployment chooses: the runtime is fixed by the device's software stack, so "ship the
ONNX Runtime file" is no answer for a TFLite-only board.
"""
from __future__ import annotations

from typing import Any

TOLERANCE = 1.0  # points of the ranking metric (top-1 percentage points) a variant may lose
RULE = (f"the fastest variant (p50) whose accuracy is within {TOLERANCE:g} point of the baseline's, "
        "per runtime and machine")


def group_key(row: dict[str, Any]) -> tuple[str, str]:
    """The (target @ host, runtime) a row was measured in; eval-only rows share an empty group."""
    return (row.get("host") or "", row.get("runtime_label") or row.get("runtime") or "")


def _p50(row: dict[str, Any]) -> float | None:
    return (row.get("latency_ms") or {}).get("p50")


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by group, then latency: hosts in name order (eval-only rows last), the runtime of the
    host's baseline row first, then runtimes by name; within a group the fastest first."""
    base_runtime = {group_key(r)[0]: group_key(r)[1] for r in rows if r.get("is_baseline")}

    def key(row: dict[str, Any]) -> tuple:
        host, runtime = group_key(row)
        p50 = _p50(row)
        return (host == "", host, runtime != base_runtime.get(host), runtime,
                p50 is None, p50 if p50 is not None else 0.0, row["artifact"])

    return sorted(rows, key=key)


def loss(row: dict[str, Any]) -> float | None:
    """How many points worse than the baseline the row ranks (negative: better); None without both scores."""
    delta = row.get("score_delta")
    if delta is None:
        return None
    return -delta if row.get("higher_is_better", True) else delta


def ship(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The variant to ship per group, in row order (call :func:`sort_rows` first for the report's order).
    A group none of whose measured variants has a score to compare is left out: no rule applies there."""
    decisions: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        worse_by = loss(row)
        if _p50(row) is None or worse_by is None or worse_by > TOLERANCE:
            continue
        best = decisions.get(group_key(row))
        if best is None or _p50(row) < _p50(best):
            decisions[group_key(row)] = row
    return [{"runtime": r["runtime"], "runtime_label": r.get("runtime_label"), "host": r["host"],
             "artifact": r["artifact"], "label": r["label"], "p50_ms": _p50(r), "speedup": r.get("speedup"),
             "speedup_ci95": r.get("speedup_ci95"), "metric": r.get("metric"), "score": r.get("score"),
             "score_delta": r.get("score_delta"), "score_delta_ci95": r.get("score_delta_ci95"),
             "score_verdict": r.get("score_verdict")} for r in decisions.values()]


def is_shipped(row: dict[str, Any], decisions: list[dict[str, Any]]) -> bool:
    return any(d["artifact"] == row["artifact"] and d["runtime"] == row["runtime"] and d["host"] == row["host"]
               for d in decisions)
