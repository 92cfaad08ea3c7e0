"""Two run directories, row by row: what changed beyond noise, and which changes are regressions.

Rows are matched by (artifact, runtime, target @ host). Per row: the latency ratio B/A (p50) with a
bootstrap 95% interval, the metric difference with its interval (paired when both evaluations saw
the same images, :mod:`edgekit.report.intervals`), and the size change. A gate fails only when a
regression is *measured*: the whole interval lies past the threshold.

The bootstrap interval covers the variation within one run only; two runs (other processes, other
cache and frequency states) differ more, so a latency change counts only past a noise floor, and
the floor is checked against each comparison's own evidence. Measured on a shared 2-core x86 VM:
two ``edgekit demo`` runs with no change (byte-identical artifacts) gave B/A p50 ratios from x0.60
(pruned.int8.tflite, ~0.4 ms) to x1.44 (pruned.int8.onnx, ~0.25 ms) over 18 rows, most within
+-20%; one artifact benchmarked 4 times in separate processes moved its p50 by 13-46%, with 100
runs as with 3000 (a longer measurement does not help: the drift is the machine's, minute to
minute). ``NOISE_FLOOR_PCT`` (25%) is the floor for millisecond models there (fp32.onnx ~2 ms:
13-21%); every comparison then raises it to the largest drift that *unchanged* rows showed in it:
a row whose file (sha256), runtime and threads are the same in both runs differs by noise alone,
so no change smaller than that drift is called one. A deliberately slowed row (1 thread instead of
2) is not unchanged and keeps its verdict. A quiet, dedicated CI runner can pass a smaller floor.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from edgekit.report.collect import collect
from edgekit.report.intervals import ratio_of_medians, score_difference

SCHEMA = "edgekit.compare/1"
NOISE_FLOOR_PCT = 25.0
SAME = "no measurable difference"
CSV_FIELDS = ["artifact", "runtime", "host", "status", "p50_a_ms", "p50_b_ms", "latency_ratio", "latency_ratio_lo",
              "latency_ratio_hi", "metric", "metric_a", "metric_b", "metric_delta", "metric_delta_lo",
              "metric_delta_hi", "paired", "size_a", "size_b", "size_change_pct", "verdict", "failures"]


@dataclasses.dataclass(frozen=True)
class Gates:
    """Thresholds of a regression: a latency ratio, a metric drop in points, a size growth (None: not gated)."""

    max_slowdown_pct: float | None = 0.0
    max_metric_drop: float | None = 0.0
    max_size_growth_pct: float | None = 0.0
    noise_floor_pct: float = NOISE_FLOOR_PCT


def row_key(row: dict[str, Any]) -> tuple[str, str | None, str | None]:
    return row["artifact"], row["runtime"], row["host"]


def describe_key(key: tuple[str, str | None, str | None]) -> str:
    artifact, runtime, host = key
    return f"{artifact} ({runtime or 'eval only'}{', ' + host if host else ''})"


def compare_runs(run_a: str | Path, run_b: str | Path, gates: Gates = Gates()) -> dict[str, Any]:
    """The edgekit.compare/1 document of B against A; ``failures`` lists every gate a row failed."""
    rows_a = {row_key(r): r for r in collect(run_a)["rows"]}
    rows_b = {row_key(r): r for r in collect(run_b)["rows"]}
    drift = unchanged_drift(rows_a, rows_b)
    used = dataclasses.replace(gates, noise_floor_pct=max(gates.noise_floor_pct, 100 * (drift[0] - 1) if drift else 0))
    rows = [compare_row(key, rows_a.get(key), rows_b.get(key), used)
            for key in [*rows_a, *(k for k in rows_b if k not in rows_a)]]
    notes = []
    if drift:
        notes.append(f"unchanged rows (same file, runtime and threads in both runs) moved by up to {drift[0]:.2f}x "
                     f"({drift[1]}): " + (f"this machine's run-to-run noise, so the noise floor used is "
                                          f"{used.noise_floor_pct:.0f}% instead of {gates.noise_floor_pct:g}%"
                                          if used.noise_floor_pct > gates.noise_floor_pct else
                                          f"within the noise floor of {gates.noise_floor_pct:g}%"))
    return {"schema": SCHEMA, "a": str(run_a), "b": str(run_b), "gates": dataclasses.asdict(gates),
            "noise_floor_used_pct": used.noise_floor_pct, "rows": rows, "notes": notes,
            "failures": [f"{r['name']}: {f}" for r in rows for f in r["failures"]]}


def unchanged_drift(rows_a: dict[tuple, dict[str, Any]], rows_b: dict[tuple, dict[str, Any]]) -> tuple[float, str] | None:
    """The largest p50 factor (>= 1) between the runs among rows that changed nothing: the same file
    (sha256), runtime and threads; None when no row is unchanged."""
    drifts = []
    for key, a in rows_a.items():
        b = rows_b.get(key)
        if (b and a.get("sha256") and a["sha256"] == b.get("sha256") and a.get("threads") == b.get("threads")
                and a["latency_ms"] and b["latency_ms"]):
            ratio = b["latency_ms"]["p50"] / a["latency_ms"]["p50"]
            drifts.append((max(ratio, 1 / ratio), describe_key(key)))
    return max(drifts) if drifts else None


def compare_row(key: tuple, a: dict[str, Any] | None, b: dict[str, Any] | None, gates: Gates) -> dict[str, Any]:
    artifact, runtime, host = key
    out: dict[str, Any] = {"name": describe_key(key), "artifact": artifact, "runtime": runtime, "host": host,
                           "latency": None, "metric": None, "size": None, "failures": []}
    if a is None or b is None:
        out["status"] = "added" if a is None else "removed"
        out["verdict"] = out["status"]
        return out
    out["status"] = "matched"
    verdicts = []
    if a["latencies_ms"] and b["latencies_ms"]:
        ratio, ci = ratio_of_medians(b["latencies_ms"], a["latencies_ms"])
        out["latency"] = {"p50_a_ms": a["latency_ms"]["p50"], "p50_b_ms": b["latency_ms"]["p50"], "ratio": ratio,
                          "ci95": ci}
        floor = 1 + gates.noise_floor_pct / 100
        if ci[0] > floor:
            verdicts.append("slower")
        elif ci[1] < 1 / floor:
            verdicts.append("faster")
        if gates.max_slowdown_pct is not None:
            limit = max(gates.max_slowdown_pct, gates.noise_floor_pct)
            if ci[0] > 1 + limit / 100:
                out["failures"].append(f"latency x{ratio:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] is more than {limit:g}% slower "
                                       f"(--max-slowdown {gates.max_slowdown_pct:g}, noise floor {gates.noise_floor_pct:g}%)")
    difference = score_difference(a, b)
    if difference is not None:
        out["metric"] = {"name": a["metric"], "a": a["score"], "b": b["score"], **difference}
        lo, hi = difference["ci95"]
        sign = 1 if a["higher_is_better"] else -1
        gained_lo, gained_hi = sorted((sign * lo, sign * hi))
        if gained_lo > 0:
            verdicts.append("better")
        elif gained_hi < 0:
            verdicts.append("worse")
        if gates.max_metric_drop is not None and gained_hi < -gates.max_metric_drop:
            out["failures"].append(f"{a['metric']} {difference['delta']:+.2f} points [{lo:+.2f}, {hi:+.2f}] drops by "
                                   f"more than {gates.max_metric_drop:g} (--max-metric-drop)")
    elif a.get("score") is not None and b.get("score") is not None and a["metric"] == b["metric"]:
        out["metric"] = {"name": a["metric"], "a": a["score"], "b": b["score"], "delta": b["score"] - a["score"],
                         "ci95": None, "paired": None}  # no per-item records: no interval, no verdict
    if a.get("size_bytes") and b.get("size_bytes"):
        change = 100.0 * (b["size_bytes"] / a["size_bytes"] - 1)
        out["size"] = {"a": a["size_bytes"], "b": b["size_bytes"], "change_pct": change}
        if gates.max_size_growth_pct is not None and change > gates.max_size_growth_pct:
            verdicts.append("larger")
            out["failures"].append(f"size {change:+.1f}% is more than {gates.max_size_growth_pct:g}% larger "
                                   "(--max-size-growth)")
    out["verdict"] = ", ".join(verdicts) or SAME
    return out


def _ci(values: list[float] | None, pattern: str) -> str:
    return "" if values is None else f"[{format(values[0], pattern)}, {format(values[1], pattern)}]"


def table_rows(document: dict[str, Any]) -> list[list[str]]:
    """One line per row for the terminal: latency ratio, metric difference, size change, verdict."""
    lines = []
    for row in document["rows"]:
        lat, met, size = row["latency"], row["metric"], row["size"]
        lines.append([
            row["artifact"], row["runtime"] or "", row["host"] or "",
            f"{lat['p50_a_ms']:.3f} -> {lat['p50_b_ms']:.3f}" if lat else "",
            f"x{lat['ratio']:.2f} {_ci(lat['ci95'], '.2f')}" if lat else "",
            f"{met['name']} {met['delta']:+.2f} {_ci(met['ci95'], '+.2f')}{' paired' if met['paired'] else ''}"
            if met else "",
            f"{size['change_pct']:+.1f}%" if size else "",
            row["verdict"],
        ])
    return lines


HEADERS = ["artifact", "runtime", "target @ host", "p50 A -> B ms", "B/A latency [95% CI]",
           "metric B-A points [95% CI]", "size", "verdict"]


def to_csv(document: dict[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in document["rows"]:
        lat, met, size = row["latency"] or {}, row["metric"] or {}, row["size"] or {}
        lat_ci, met_ci = lat.get("ci95") or [None, None], met.get("ci95") or [None, None]
        writer.writerow({
            "artifact": row["artifact"], "runtime": row["runtime"], "host": row["host"], "status": row["status"],
            "p50_a_ms": lat.get("p50_a_ms"), "p50_b_ms": lat.get("p50_b_ms"), "latency_ratio": lat.get("ratio"),
            "latency_ratio_lo": lat_ci[0], "latency_ratio_hi": lat_ci[1], "metric": met.get("name"),
            "metric_a": met.get("a"), "metric_b": met.get("b"), "metric_delta": met.get("delta"),
            "metric_delta_lo": met_ci[0], "metric_delta_hi": met_ci[1], "paired": met.get("paired"),
            "size_a": size.get("a"), "size_b": size.get("b"), "size_change_pct": size.get("change_pct"),
            "verdict": row["verdict"], "failures": "; ".join(row["failures"]),
        })
    return buffer.getvalue()


GATES = (("latency", "latency", "--max-slowdown"), ("metric", "metric", "--max-metric-drop"),
         ("size", "size", "--max-size-growth"))


def to_junit(document: dict[str, Any]) -> str:
    """JUnit XML: one testcase per row and gate (classname: the row), a failure per regression, a
    skip where a row has no such measurement (added, removed, not benchmarked)."""
    suite = ET.Element("testsuite", name="edgekit compare", tests="0", failures="0", skipped="0")
    counts = {"tests": 0, "failures": 0, "skipped": 0}
    for row in document["rows"]:
        for gate, part, flag in GATES:
            case = ET.SubElement(suite, "testcase", classname=row["name"], name=gate)
            counts["tests"] += 1
            failed = [f for f in row["failures"] if flag in f]
            if failed:
                ET.SubElement(case, "failure", message=failed[0], type="regression").text = "\n".join(failed)
                counts["failures"] += 1
            elif row[part] is None:
                ET.SubElement(case, "skipped", message=f"{row['status']}: no {part} in both runs")
                counts["skipped"] += 1
    for name, value in counts.items():
        suite.set(name, str(value))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
