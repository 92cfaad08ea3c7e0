"""The latency/accuracy report: report.json (versioned schema), report.md and report.html."""
from __future__ import annotations

import json
from pathlib import Path

from edgekit.atomic import write_text_atomic
from edgekit.report.collect import collect
from edgekit.report.render import SCHEMA, build_document, render_html, render_markdown
from edgekit.report.terminal import run_summary, terminal_summary

__all__ = ["SCHEMA", "run_summary", "terminal_summary", "write_report"]


def write_report(run_dir: str | Path, baseline: str | None = None) -> dict[str, Path]:
    """Write the three report files into ``run_dir``; they are derived, so they are regenerated
    (atomically) on every call, while the measurements they come from are never touched."""
    run_dir = Path(run_dir)
    document = build_document(collect(run_dir, baseline))
    paths = {"json": run_dir / "report.json", "md": run_dir / "report.md", "html": run_dir / "report.html"}
    write_text_atomic(paths["json"], json.dumps(document, indent=1) + "\n", force=True)
    write_text_atomic(paths["md"], render_markdown(document), force=True)
    write_text_atomic(paths["html"], render_html(document), force=True)
    return paths
