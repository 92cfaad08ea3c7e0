"""report.json, report.md and a self-contained report.html (plots embedded as PNG data URIs).

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
                difference"|"baseline"), "pareto", "noisy", "noise_reasons", "is_baseline"}]
    summary   {"best_within_1pt": row artifact or null, "pareto": [artifacts]}
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from typing import Any

from edgekit import __version__
from edgekit.report.collect import goodness
from edgekit.report.profile_table import html_section, markdown_section

SCHEMA = "edgekit.report/1"
METRIC_LABELS = {"top1": "top-1 (%)", "agreement": "top-1 agreement with the baseline (%)"}
HEADERS = ["variant", "artifact", "runtime", "target @ host", "MB", "MMACs", "p50 ms", "p90 ms", "speed-up",
           "vs FP32", "top-1 %", "Δ top-1", "agree %", "cosine", "notes"]


def _fmt(value: Any, pattern: str) -> str:
    return "" if value is None else format(value, pattern)


def table_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in rows:
        lat = r["latency_ms"] or {}
        notes = []
        if r["pareto"]:
            notes.append("Pareto")
        if r["noisy"]:
            notes.append("NOISY: " + "; ".join(r["noise_reasons"]))
        if r.get("accuracy_warning"):
            notes.append("ACCURACY HOST-SPECIFIC: U8S8 saturates on this CPU (no VNNI)")
        notes += quantize_notes(r)
        out.append([
            r["label"] + (" (baseline)" if r["is_baseline"] else ""), r["artifact"], r.get("runtime_label") or r["runtime"] or "",
            r["host"] or "",
            _fmt((r["size_bytes"] or 0) / 1e6, ".2f"), _fmt(r["macs"] / 1e6 if r["macs"] else None, ".1f"),
            _fmt(lat.get("p50"), ".3f"), _fmt(lat.get("p90"), ".3f"), _fmt(r["speedup"], ".2f") + ("x" if r["speedup"] else ""),
            r["vs_baseline"] or "", _fmt(r["top1"], ".2f"), _fmt(r["top1_delta"], "+.2f"), _fmt(r["agreement"], ".1f"),
            _fmt(r.get("cosine"), ".4f"),
            ", ".join(notes),
        ])
    return out


def quantize_notes(row: dict[str, Any]) -> list[str]:
    """What the manifest says the quantization measured: its fidelity where eval measured none, and
    an INT8 that was slower than FP32 at quantize time (the bench row may be on another machine)."""
    notes = []
    fidelity, speed = row.get("quantize_fidelity"), row.get("quantize_speed")
    if fidelity and row.get("cosine") is None:
        faithful = "" if fidelity.get("ok", True) else "NOT FAITHFUL: "
        notes.append(f"{faithful}fidelity at quantize time: cosine {fidelity['cosine']:.4f}, "
                     f"agreement {fidelity['agreement']:.1f}% ({fidelity['samples']} images)")
    if speed and speed.get("verdict") == "slower":
        why = f": {speed['reason']}" if speed.get("reason") else ""
        notes.append(f"INT8 SLOWER than FP32 at quantize time ({speed['ratio']:.2f}x){why}")
    return notes


def _point_label(row: dict[str, Any]) -> str:
    """A plot label: the variant and, since one file can run on several runtimes, the runtime."""
    runtime = row.get("runtime_label") or row.get("runtime")
    return f"{row['label']} ({runtime})" if runtime else row["label"]


def summary(rows: list[dict[str, Any]], baseline: str | None) -> dict[str, Any]:
    base = next((r for r in rows if r["artifact"] == baseline and r["score"] is not None), None)
    within = [r for r in rows if r["latency_ms"] and base and r["score"] is not None and r["metric"] == base["metric"]
              and goodness(base) - goodness(r) <= 1.0]  # at most one point worse on the ranking metric
    best = min(within, key=lambda r: r["latency_ms"]["p50"]) if within else None
    return {"best_within_1pt": best["artifact"] if best else None,
            "best_within_1pt_host": best["host"] if best else None,
            "best_speedup": best["speedup"] if best else None,
            "pareto": sorted({r["artifact"] for r in rows if r["pareto"]})}


def build_document(collected: dict[str, Any]) -> dict[str, Any]:
    rows = collected["rows"]
    return {
        "schema": SCHEMA, "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgekit": __version__, "name": collected["name"], "baseline": collected["baseline"],
        "hosts": collected["hosts"], "rows": rows, "summary": summary(rows, collected["baseline"]),
    }


def _summary_lines(document: dict[str, Any]) -> list[str]:
    s = document["summary"]
    lines = [f"Baseline: `{document['baseline']}`."]
    if s["best_within_1pt"]:
        lines.append(f"Fastest variant within 1 top-1 point of the baseline: `{s['best_within_1pt']}` on "
                     f"{s['best_within_1pt_host']} ({s['best_speedup']:.2f}x the baseline's p50)." if s["best_speedup"]
                     else f"Most accurate-enough variant: `{s['best_within_1pt']}`.")
    if s["pareto"]:
        lines.append("Pareto-optimal (no other variant is both faster and more accurate): "
                     + ", ".join(f"`{a}`" for a in s["pareto"]) + ".")
    lines.append("Speed-ups compare p50 latencies; where the bootstrap 95% confidence intervals of two p50s "
                 "overlap the table says \"no measurable difference\" instead of ranking noise.")
    return lines


def render_markdown(document: dict[str, Any]) -> str:
    from tabulate import tabulate

    parts = [f"# edgekit report: {document['name']}", "", *_summary_lines(document), "",
             tabulate(table_rows(document["rows"]), headers=HEADERS, tablefmt="github"), "",
             *markdown_section(document["rows"]), "## Machines", ""]
    for host, system in document["hosts"].items():
        parts.append(f"- **{host}**: {system.get('cpu_model', '?')}, {system.get('cpu_count', '?')} cores, ISA "
                     f"{', '.join(system.get('isa_flags') or []) or '?'}, governor {system.get('cpu_governor') or 'n/a'}, "
                     f"runtimes {system.get('runtimes', {})}")
    parts.append(f"\nGenerated {document['generated']} by edgekit {document['edgekit']}.")
    return "\n".join(parts) + "\n"


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def plots(rows: list[dict[str, Any]]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = {}
    measured = [r for r in rows if r["latency_ms"]]
    scored = [r for r in measured if r["score"] is not None]
    metric = scored[0]["metric"] if scored and len({r["metric"] for r in scored}) == 1 else None
    scored = scored if metric else []
    if scored:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for host in sorted({r["host"] for r in scored}):
            pts = [r for r in scored if r["host"] == host]
            ax.scatter([r["latency_ms"]["p50"] for r in pts], [r["score"] for r in pts], label=host, s=40)
            for index, r in enumerate(sorted(pts, key=lambda r: r["latency_ms"]["p50"])):
                # staggered offsets: variants often share an accuracy and sit on one line
                ax.annotate(_point_label(r), (r["latency_ms"]["p50"], r["score"]), fontsize=7,
                            xytext=(4, 6 + 9 * (index % 4)), textcoords="offset points",
                            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "grey"})
            front = sorted((r for r in pts if r["pareto"]), key=lambda r: r["latency_ms"]["p50"])
            if front:
                ax.plot([r["latency_ms"]["p50"] for r in front], [r["score"] for r in front], "r*--", lw=1, ms=12,
                        label=f"Pareto front ({host})")
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency (ms, log scale)")
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        low = min(r["score"] for r in scored)
        ax.set_ylim(max(0.0, low - 2.0), 100.5 + 4.0)
        ax.set_title("Latency vs accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        images["tradeoff"] = _png(fig)
        plt.close(fig)
    if measured:
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(measured) + 1.5))
        ax.boxplot([r["latencies_ms"] for r in measured], orientation="horizontal", showfliers=False)
        ax.set_yticks(range(1, len(measured) + 1), [f"{_point_label(r)} [{r['host']}]" for r in measured], fontsize=7)
        ax.set_xlabel("latency (ms)")
        ax.set_title("Latency distributions")
        ax.grid(alpha=0.3, axis="x")
        images["latency"] = _png(fig)
        plt.close(fig)
    sized = {r["artifact"]: r for r in rows if r["size_bytes"]}
    if sized:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(sized) + 1.5))
        names = list(sized)
        ax.barh(names, [sized[n]["size_bytes"] / 1e6 for n in names])
        ax.set_xlabel("size (MB)")
        ax.set_title("Artifact sizes")
        ax.tick_params(axis="y", labelsize=7)
        images["sizes"] = _png(fig)
        plt.close(fig)
    return images


def render_html(document: dict[str, Any]) -> str:
    from tabulate import tabulate

    images = plots(document["rows"])
    table = tabulate(table_rows(document["rows"]), headers=HEADERS, tablefmt="unsafehtml")
    figures = "".join(f'<figure><img alt="{name}" src="{uri}"></figure>' for name, uri in images.items())
    hosts = "".join(f"<li><b>{html.escape(h)}</b>: {html.escape(str(s.get('cpu_model', '?')))}, {s.get('cpu_count', '?')} cores, "
                    f"ISA {html.escape(', '.join(s.get('isa_flags') or []))}</li>" for h, s in document["hosts"].items())
    summary_html = "".join(f"<p>{html.escape(line).replace('`', '')}</p>" for line in _summary_lines(document))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}figure{display:inline-block;margin:1em}"
             "img{max-width:560px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgekit report: {html.escape(document['name'])}</title>"
            f"<style>{style}</style></head><body><h1>edgekit report: {html.escape(document['name'])}</h1>{summary_html}"
            f"{table}{html_section(document['rows'])}<h2>Plots</h2>{figures}<h2>Machines</h2><ul>{hosts}</ul>"
            f"<p><small>Generated {document['generated']} by edgekit {document['edgekit']}.</small></p></body></html>\n")
