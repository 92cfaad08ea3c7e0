"""report.json, report.md and a self-contained report.html (plots embedded as PNG data URIs).

The page leads with the decision (what to ship, per runtime and machine: see ``decide.py``), then the
table sorted by group and latency with the shipped rows highlighted, then the plots at full width.

``report.json`` schema ``edgekit.report/1``::

    schema, generated (ISO-8601), edgekit (version), name, baseline (artifact name)
    hosts     {"<target> @ <host>": system info of that machine}
    rows      [{"artifact", "label", "host", "format", "runtime", "runtime_label", "size_bytes", "macs", "params",
                "precision", "pruned", "distilled", "quantization", "top1", "top5", "top1_delta",
                "agreement", "cosine", "quantize_fidelity" (manifest: cosine, agreement, samples, ok),
                "quantize_speed" (manifest: INT8 vs FP32 p50 at quantize time), "task", "metric" (what the
                row is ranked by: the task's primary metric with labels, else its fidelity metric), "higher_is_better", "score" (that metric's
                value), "score_delta", "score_delta_ci95" ([lo, hi] points, 95%: paired on the same
                images, else unpaired; null without per-item records), "score_verdict" ("better"|"worse"|
                "no measurable difference"|"baseline"|null), "num_samples", "per_item" (the eval
                document's per-image bits, edgekit.tasks.items), "latency_ms": {min,p50,p90,p99,mean,std,cv,p50_ci95,runs} | null,
                "latencies_ms", "speedup" (baseline p50 / p50), "speedup_ci95" ([lo, hi], bootstrap 95%;
                null for the baseline row), "vs_baseline" ("faster"|"slower"|"no measurable
                difference"|"baseline"), "pareto", "noisy", "noise_reasons", "is_baseline", "ship",
                "profile", "quantize_sensitivity", "device_parity" (bench with parity: {"cosine",
                "top1_agreement", "samples", "agrees", "inputs", "reference", "device", "host_same_artifact":
                {"cosine", "top1_agreement", "samples", "agrees"}} or {"error"}; null when not measured)}],
              sorted by group (target @ host, then runtime: the baseline's first) and then p50
    summary   {"rule" (the ship rule in words), "ship": [{"runtime", "runtime_label", "host", "artifact", "label",
               "p50_ms", "speedup", "speedup_ci95", "metric", "score", "score_delta", "score_delta_ci95",
               "score_verdict"}] (one per runtime x target @ host group that has a qualifying variant),
               "best_within_1pt" (artifact, over all groups) or null, "best_within_1pt_host", "best_speedup",
               "pareto": [artifacts]}
"""
from __future__ import annotations

import datetime as _dt
import html
from typing import Any, Callable

from edgekit import __version__
from edgekit.report.cells import (delta_header, delta_text, failure_lines, fmt, group_name, parity_note, parity_text,
                                  ship_text, speedup_text, versus_text)
from edgekit.report.collect import goodness
from edgekit.report.decide import RULE, group_key, is_shipped, ship, sort_rows
from edgekit.report.profile_table import html_section, markdown_section

SCHEMA = "edgekit.report/1"

Column = tuple[str, Callable[[int, dict[str, Any]], str]]


def _notes(row: dict[str, Any]) -> str:
    notes = []
    if row.get("ship"):
        notes.append("SHIP")
    if row["pareto"]:
        notes.append("Pareto")
    if row["noisy"]:
        notes.append("NOISY: " + "; ".join(row["noise_reasons"]))
    parity = parity_note(row)
    if parity:
        notes.append(parity)
    if row.get("accuracy_warning"):
        notes.append("ACCURACY HOST-SPECIFIC: U8S8 saturates on this CPU (no VNNI)")
    notes += quantize_notes(row)
    return ", ".join(notes)


def columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The table's columns; one that is empty in every row (no MACs, no cosine) is left out."""
    candidates: list[Column] = [
        ("#", lambda n, r: str(n)),
        ("variant", lambda n, r: r["label"] + (" (baseline)" if r["is_baseline"] else "")),
        ("artifact", lambda n, r: r["artifact"]),
        ("runtime", lambda n, r: r.get("runtime_label") or r["runtime"] or ""),
        ("target @ host", lambda n, r: r["host"] or ""),
        ("MB", lambda n, r: fmt(r["size_bytes"] / 1e6 if r["size_bytes"] else None, ".2f")),
        ("MMACs", lambda n, r: fmt(r["macs"] / 1e6 if r["macs"] else None, ".1f")),
        ("p50 ms", lambda n, r: fmt((r["latency_ms"] or {}).get("p50"), ".3f")),
        ("p90 ms", lambda n, r: fmt((r["latency_ms"] or {}).get("p90"), ".3f")),
        ("speed-up", lambda n, r: speedup_text(r)),
        ("vs baseline", lambda n, r: versus_text(r)),
        ("top-1 %", lambda n, r: fmt(r["top1"], ".2f")),
        (delta_header(rows), lambda n, r: delta_text(r, short=True)),
        ("agree %", lambda n, r: fmt(r["agreement"], ".1f")),
        ("cosine", lambda n, r: fmt(r.get("cosine"), ".4f")),
        ("device parity: cos (agree) vs FP32 | vs host", lambda n, r: parity_text(r)),
        ("notes", lambda n, r: _notes(r)),
    ]
    keep = {"#", "variant", "runtime", "target @ host", "p50 ms", "notes"}
    return [c for c in candidates if c[0] in keep or any(c[1](n, r) for n, r in enumerate(rows, 1))]


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Headers and cells, rows numbered from 1 (the plots name points by these numbers)."""
    cols = columns(rows)
    return [h for h, _ in cols], [[cell(n, r) for _, cell in cols] for n, r in enumerate(rows, 1)]


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return table(rows)[1]


def quantize_notes(row: dict[str, Any]) -> list[str]:
    """What the manifest says the quantization measured: its fidelity where eval measured none, and
    a quantized model (INT8, INT8 dynamic, FP16) that was slower than FP32 at quantize time (the bench row may be on another machine)."""
    notes = []
    fidelity, speed = row.get("quantize_fidelity"), row.get("quantize_speed")
    if fidelity and row.get("cosine") is None:
        faithful = "" if fidelity.get("ok", True) else "NOT FAITHFUL: "
        notes.append(f"{faithful}fidelity at quantize time: cosine {fidelity['cosine']:.4f}, "
                     f"agreement {fidelity['agreement']:.1f}% ({fidelity['samples']} images)")
    builtin = row.get("quantize_builtin_kernels")
    if fidelity and builtin:
        notes.append(f"XNNPACK computes this INT8 less faithfully than TFLite's builtin kernels at quantize time: cosine "
                     f"{fidelity['cosine']:.4f} vs {builtin['cosine']:.4f} (a profile with tflite.delegate: none runs them)")
    if speed and speed.get("verdict") == "slower":
        why = f": {speed['reason']}" if speed.get("reason") else ""
        notes.append(f"{row.get('precision') or 'INT8'} SLOWER than FP32 at quantize time ({speed['ratio']:.2f}x){why}")
    return notes


def summary(rows: list[dict[str, Any]], baseline: str | None) -> dict[str, Any]:
    base = next((r for r in rows if r["artifact"] == baseline and r["score"] is not None), None)
    within = [r for r in rows if r["latency_ms"] and base and r["score"] is not None and r["metric"] == base["metric"]
              and goodness(base) - goodness(r) <= 1.0]  # at most one point worse on the ranking metric
    best = min(within, key=lambda r: r["latency_ms"]["p50"]) if within else None
    return {"rule": RULE, "ship": ship(rows),
            "best_within_1pt": best["artifact"] if best else None,
            "best_within_1pt_host": best["host"] if best else None,
            "best_speedup": best["speedup"] if best else None,
            "pareto": sorted({r["artifact"] for r in rows if r["pareto"]})}


def build_document(collected: dict[str, Any]) -> dict[str, Any]:
    rows = sort_rows(collected["rows"])
    decisions = ship(rows)
    for row in rows:
        row["ship"] = is_shipped(row, decisions)
    return {
        "schema": SCHEMA, "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgekit": __version__, "name": collected["name"], "baseline": collected["baseline"],
        "hosts": collected["hosts"], "rows": rows, "summary": summary(rows, collected["baseline"]),
        "failures": collected.get("failures", []),
    }


def _baseline_label(document: dict[str, Any]) -> str:
    base = next((r for r in document["rows"] if r["artifact"] == document["baseline"]), None)
    return f"{base['label']} ({document['baseline']})" if base else str(document["baseline"])


def ship_items(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Per decision: (group, variant label, artifact, figures), plain text for every renderer."""
    return [(group_name(d["host"], d.get("runtime_label") or d["runtime"]), d["label"], d["artifact"], ship_text(d))
            for d in document["summary"]["ship"]]


def _context_lines(document: dict[str, Any]) -> list[str]:
    """What the table rests on, after the decision: the baseline, the Pareto set, how speed is compared."""
    s = document["summary"]
    labels = {r["artifact"]: r["label"] for r in document["rows"]}
    lines = [f"Baseline: {_baseline_label(document)}."]
    if s["pareto"]:
        lines.append("Pareto-optimal on their machine (no other variant is both faster and more accurate): "
                     + ", ".join(f"{labels.get(a, a)} ({a})" for a in s["pareto"]) + ".")
    lines.append("Speed-ups compare p50 latencies; \"vs baseline\" says faster or slower only where the 95% "
                 "confidence intervals show it, else \"no measurable difference\". Accuracy differences carry "
                 "their 95% interval (paired over the same images); one that spans 0 is no measurable difference, "
                 "and the table names only a measured change (better, worse).")
    return lines


def render_markdown(document: dict[str, Any]) -> str:
    from tabulate import tabulate

    headers, cells = table(document["rows"])
    for row, line in zip(document["rows"], cells):
        if row.get("ship"):
            line[1] = f"**{line[1]}**"
    parts = [f"# edgekit report: {document['name']}", "", "## What to ship", ""]
    items = ship_items(document)
    parts += [f"- **{group}**: ship **{label}** (`{artifact}`): {figures}." for group, label, artifact, figures in items]
    if not items:
        parts.append("- No variant qualifies: none has both a latency and an accuracy to compare with the baseline.")
    parts += [f"- **{line}**" for line in failure_lines(document)]
    parts += ["", f"Rule: {RULE}.", "", *_context_lines(document), "",
              tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True), "", *markdown_section(document["rows"]), "## Machines", ""]
    for host, system in document["hosts"].items():
        parts.append(f"- **{host}**: {system.get('cpu_model', '?')}, {system.get('cpu_count', '?')} cores, ISA "
                     f"{', '.join(system.get('isa_flags') or []) or '?'}, governor {system.get('cpu_governor') or 'n/a'}, "
                     f"runtimes {system.get('runtimes', {})}")
    parts.append(f"\nGenerated {document['generated']} by edgekit {document['edgekit']}.")
    return "\n".join(parts) + "\n"


STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1.5em 24px;max-width:1200px;
     color:#222;line-height:1.45}
h1{margin:.2em 0 .6em;font-size:1.7em}
.ship-box{border:2px solid #2e7d32;border-left-width:10px;background:#eef7ee;border-radius:6px;padding:.8em 1.2em;
          margin:0 0 1.2em}
.ship-box h2{margin:.1em 0 .4em;color:#1b5e20;font-size:1.35em}
.ship-box ul{margin:.2em 0 .5em;padding-left:1.2em;font-size:1.08em}
.ship-box li{margin:.25em 0}
.ship-box .rule{color:#444;font-size:.9em;margin:.3em 0 0}
.context{color:#444;font-size:.92em}
.context p{margin:.3em 0}
.table-wrap{overflow-x:auto;margin:1em 0}
table{border-collapse:collapse;font-size:12.5px;width:100%}
td,th{border:1px solid #d0d0d0;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f3f3f3;white-space:nowrap;text-align:right}
th.text{text-align:left}
tr.group th{text-align:left;background:#e8ecf3;font-size:13px}
td code{font-size:11px;color:#666;font-weight:normal}
td.text{text-align:left}
td.notes{text-align:left;font-size:11.5px;color:#555;min-width:14em}
tr.ship td{background:#d7efd8;font-weight:600}
tr.ship td:first-child{box-shadow:inset 5px 0 0 #2e7d32}
tr.baseline td{background:#f7f7f7}
figure{margin:1.2em 0}
figure img{display:block;width:100%;height:auto;max-width:100%}
code{font-size:.92em}
"""
TEXT_COLUMNS = {"variant", "artifact", "runtime", "target @ host", "vs baseline", "notes"}


def _html_table(document: dict[str, Any]) -> str:
    """The table with a header row per group, the artifact file under its variant's name and, on a
    single machine, no host column (the group rows name it): narrow enough for the page."""
    rows = document["rows"]
    headers, cells = table(rows)
    hosts = {r["host"] for r in rows}
    drop = {"artifact"} | ({"target @ host"} if len(hosts) == 1 else set())
    keep = [i for i, h in enumerate(headers) if h not in drop]
    head = "".join(f'<th class="{"text" if headers[i] in TEXT_COLUMNS else "num"}">{html.escape(headers[i])}</th>'
                   for i in keep)
    body, group = [], None
    for row, line in zip(rows, cells):
        if group_key(row) != group:
            group = group_key(row)
            body.append(f'<tr class="group"><th colspan="{len(keep)}">'
                        f"{html.escape(group_name(row['host'], row.get('runtime_label') or row['runtime']))}</th></tr>")
        tds = []
        for i in keep:
            text = html.escape(line[i])
            if headers[i] == "variant":
                text += f'<br><code>{html.escape(row["artifact"])}</code>'
            css = "notes" if headers[i] == "notes" else "text" if headers[i] in TEXT_COLUMNS else "num"
            tds.append(f'<td class="{css}">{text}</td>')
        css = "ship" if row.get("ship") else "baseline" if row["is_baseline"] else ""
        body.append(f'<tr class="{css}">{"".join(tds)}</tr>' if css else f"<tr>{''.join(tds)}</tr>")
    return f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _ship_box(document: dict[str, Any]) -> str:
    items = "".join(f"<li><b>{html.escape(group)}</b>: ship <b>{html.escape(label)}</b> "
                    f"(<code>{html.escape(artifact)}</code>): {html.escape(figures)}.</li>"
                    for group, label, artifact, figures in ship_items(document))
    if not items:
        items = "<li>No variant qualifies: none has both a latency and an accuracy to compare with the baseline.</li>"
    items += "".join(f"<li><b>{html.escape(line)}</b></li>" for line in failure_lines(document))
    return (f'<section class="ship-box" id="ship"><h2>What to ship</h2><ul>{items}</ul>'
            f'<p class="rule">Rule: {html.escape(RULE)}. Shipped rows are highlighted in the table and ringed '
            f"in the plot.</p></section>")


def render_html(document: dict[str, Any], sections: list[str] | None = None) -> str:
    """The page: title, the ship box, context, the table, ``sections`` (extra HTML blocks other report
    parts add, e.g. a per-layer profile), the plots, the machines."""
    from edgekit.report.plots import plots

    numbered = list(enumerate(document["rows"], 1))
    images = plots(numbered, {n for n, r in numbered if r.get("ship")})
    figures = "".join(f'<figure><img alt="{name}" src="{uri}"></figure>' for name, uri in images.items())
    hosts = "".join(f"<li><b>{html.escape(h)}</b>: {html.escape(str(s.get('cpu_model', '?')))}, {s.get('cpu_count', '?')} cores, "
                    f"ISA {html.escape(', '.join(s.get('isa_flags') or []))}</li>" for h, s in document["hosts"].items())
    context = "".join(f"<p>{html.escape(line)}</p>" for line in _context_lines(document))
    name = html.escape(document["name"])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>edgekit report: {name}</title>"
            f"<style>{STYLE}</style></head><body><h1>edgekit report: {name}</h1>{_ship_box(document)}"
            f"<div class='context'>{context}</div>{_html_table(document)}{html_section(document['rows'])}{''.join(sections or [])}"
            f"<h2>Plots</h2>{figures}<h2>Machines</h2><ul>{hosts}</ul>"
            f"<p><small>Generated {document['generated']} by edgekit {document['edgekit']}.</small></p></body></html>\n")
