"""``edgekit report RUN/``: report.json, report.md and report.html from a run directory."""
from __future__ import annotations

import argparse

from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="write report.json/.md/.html for a run directory",
        description="Write report.json, report.md and report.html into a run directory from its artifacts, "
                    "evaluations and benchmarks, and print the Markdown.")
    parser.add_argument("run_dir", help="a run directory (artifacts/, eval/, bench/, run.json)")
    parser.add_argument("--baseline", help="artifact to compare against (default: run.json's, else the FP32 ONNX)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from edgekit.cli.common import check_folder_for
    from edgekit.report import write_report

    if Path(args.run_dir).is_dir():
        check_folder_for(Path(args.run_dir))  # the report files are written into it
    paths = write_report(args.run_dir, args.baseline)
    print(paths["md"].read_text())
    log.info("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
