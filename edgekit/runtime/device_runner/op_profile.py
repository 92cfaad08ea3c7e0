"""Per-operator time from a runtime's own profiler, summed over a profiled pass (``--profile``).

The pass runs after the timed runs, on a separate session or compiled model with profiling on, so
the profiler's overhead never enters the latency figures. Every runtime reduces its profiler's
output to ``(run, node, op_type, provider, seconds)`` samples; :func:`summarize` turns them into the
result's ``profile``: the slowest ``top`` nodes by total time plus one ``other`` remainder, so the
shares add up to 1. numpy-free stdlib only: this runs on devices.
"""
from __future__ import annotations

import json
import os
import statistics
from typing import Any, Iterable

RUNS_MAX = 100  # profiled inferences at most: enough for stable per-node means, bounded trace files
WARMUP = 5      # unprofiled-in-effect first inferences of the profiling session (caches, lazy init)


def not_available(reason: str) -> dict[str, Any]:
    """A runtime (or model) without reachable per-operator timing: said, never faked."""
    return {"available": False, "reason": reason, "runs": 0, "ops": []}


Sample = tuple[int, str, str, "str | None", float]


def summarize(samples: Iterable[Sample], runs: int, top: int) -> dict[str, Any]:
    """``(run, node, op_type, provider, seconds)`` samples over ``runs`` inferences -> the profile
    dict. ``kernel_ms_p50``: the median over runs of a run's summed kernel time, the figure to set
    against the timed p50 (the mean, ``kernel_ms_per_run``, carries a loaded machine's outliers)."""
    totals: dict[str, dict[str, Any]] = {}
    per_run: dict[int, float] = {}
    for run, node, op_type, provider, seconds in samples:
        entry = totals.setdefault(node, {"node": node, "op_type": op_type, "seconds": 0.0, "provider": provider})
        entry["seconds"] += seconds
        per_run[run] = per_run.get(run, 0.0) + seconds
    grand = sum(e["seconds"] for e in totals.values())
    if not totals or grand <= 0:
        return not_available("the profiler recorded no operator time")
    ranked = sorted(totals.values(), key=lambda e: e["seconds"], reverse=True)
    ops = [_op(e["node"], e["op_type"], e["seconds"], runs, grand, e["provider"]) for e in ranked[:top]]
    rest = ranked[top:]
    if rest:
        other = _op("(other)", f"{len(rest)} more nodes", sum(e["seconds"] for e in rest), runs, grand, None)
        ops.append({**other, "other": True, "nodes": len(rest)})
    return {"available": True, "reason": None, "runs": runs, "nodes": len(totals),
            "kernel_ms_per_run": round(1000.0 * grand / runs, 5),
            "kernel_ms_p50": round(1000.0 * statistics.median(per_run.values()), 5), "ops": ops}


def _op(node: str, op_type: str, seconds: float, runs: int, grand: float, provider: str | None) -> dict[str, Any]:
    op = {"node": node, "op_type": op_type, "total_ms": round(1000.0 * seconds, 4),
          "mean_ms": round(1000.0 * seconds / runs, 5), "share": round(seconds / grand, 5)}
    if provider:
        op["provider"] = provider
    return op


def ort_trace_samples(trace_file: str, runs: int) -> list[Sample]:
    """ONNX Runtime's Chrome-trace JSON -> kernel samples of the last ``runs`` ``model_run`` events
    (earlier runs are warm-up: the profiler is on from session creation). Node events are named
    ``<node>_kernel_time``; ``args.op_name`` is the kernel (``QLinearConv`` after QDQ fusion)."""
    with open(trace_file, encoding="utf-8") as handle:
        events = json.load(handle)
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    if not windows:
        return []
    samples = []
    for event in events:
        name, ts = event.get("name", ""), event.get("ts", -1)
        if event.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        run = next((index for index, (begin, end) in enumerate(windows) if begin <= ts <= end), None)
        if run is None:  # a warm-up run
            continue
        args = event.get("args") or {}
        samples.append((run, name[: -len("_kernel_time")], str(args.get("op_name", "?")), args.get("provider"),
                        event.get("dur", 0) / 1e6))
    return samples


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
