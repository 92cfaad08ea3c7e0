"""The few lines ``edgekit run`` and ``edgekit demo`` end with: per variant accuracy, p50 and size,
then what to ship; the whole story stays in report.html."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.report.cells import METRIC_NAMES, failure_lines, fmt, group_name, ship_text, speedup_text


def terminal_summary(document: dict[str, Any]) -> str:
    """A short table (one line per measured variant, in the report's order) and the ship line(s)."""
    from tabulate import tabulate

    rows = document["rows"]
    hosts = {r["host"] for r in rows}
    metrics = {r["metric"] for r in rows if r.get("metric")}
    metric = METRIC_NAMES.get(next(iter(metrics)), "score") if len(metrics) == 1 else "score"
    table = []
    for n, r in enumerate(rows, 1):
        line = [n, "ship" if r.get("ship") else "", r["label"] + (" (baseline)" if r["is_baseline"] else ""),
                r.get("runtime_label") or r["runtime"] or ""]
        if len(hosts) > 1:
            line.append(r["host"] or "")
        line += [fmt(r["score"], ".2f"), fmt((r["latency_ms"] or {}).get("p50"), ".3f"), speedup_text(r),
                 fmt(r["size_bytes"] / 1e6 if r["size_bytes"] else None, ".2f")]
        table.append(line)
    headers = ["#", "", "variant", "runtime", *(["target @ host"] if len(hosts) > 1 else []),
               f"{metric} %" if metric in ("top-1", "top-5", "agreement") else metric, "p50 ms", "speed-up", "MB"]
    align = ["right"] + ["left"] * (len(headers) - 5) + ["right"] * 4
    lines = [tabulate(table, headers=headers, tablefmt="simple", disable_numparse=True, colalign=align), ""]
    for d in document["summary"].get("ship", []):
        lines.append(f"ship on {group_name(d['host'], d.get('runtime_label') or d['runtime'])}: "
                     f"{d['label']} ({d['artifact']}), {ship_text(d)}")
    if not document["summary"].get("ship"):
        lines.append("ship: no variant has both a latency and an accuracy to compare with the baseline")
    lines += failure_lines(document)
    return "\n".join(lines)


def run_summary(run_dir: str | Path) -> str:
    """:func:`terminal_summary` of the report.json in ``run_dir``."""
    path = Path(run_dir) / "report.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgekitError(f"{path}: no readable report ({exc})") from exc
    return terminal_summary(document)
