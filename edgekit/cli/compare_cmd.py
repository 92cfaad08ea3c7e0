"""``edgekit compare RUN_A RUN_B``: B against A row by row, with intervals; exit 1 on a measured regression."""
from __future__ import annotations

import argparse
import json

from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    from edgekit.cli.common import add_json_output
    from edgekit.report.compare import NOISE_FLOOR_PCT

    parser = subparsers.add_parser(
        "compare", help="compare two run directories; exit 1 when a regression is measured beyond noise",
        description="Rows are matched by (artifact, runtime, target @ host). A gate fails only when the whole 95%% "
                    "interval is past its threshold. Exit codes: 0 no regression, 1 regression, 2 bad input.")
    parser.add_argument("run_a", help="the baseline run directory (e.g. a stored run of main)")
    parser.add_argument("run_b", help="the run directory to check against it")
    parser.add_argument("--max-slowdown", type=float, default=0.0, metavar="PCT",
                        help="fail when a row is measured more than PCT%% slower (p50; never below --noise-floor; "
                             "default 0: any slowdown beyond the noise floor)")
    parser.add_argument("--max-metric-drop", type=float, default=0.0, metavar="POINTS",
                        help="fail when a row's metric (top-1, or agreement without labels) is measured more than "
                             "POINTS percentage points worse (default 0: any drop whose interval excludes 0)")
    parser.add_argument("--max-size-growth", type=float, default=0.0, metavar="PCT",
                        help="fail when an artifact grew by more than PCT%% (default 0: any growth)")
    parser.add_argument("--noise-floor", type=float, default=NOISE_FLOOR_PCT, metavar="PCT",
                        help=f"latency changes below PCT%% are no measurable difference: runs differ more than one "
                             f"run's interval says (default {NOISE_FLOOR_PCT:g}, measured on a shared 2-core VM)")
    add_json_output(parser, "write the comparison (schema edgekit.compare/1) to this file")
    parser.add_argument("--csv", metavar="FILE", help="write one CSV line per row to this file")
    parser.add_argument("--junit", metavar="FILE", help="write JUnit XML (one testcase per row and gate) to this file")
    parser.add_argument("--force", action="store_true", help="overwrite the output files")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from edgekit.atomic import write_text_atomic
    from edgekit.cli.common import check_output
    from edgekit.errors import EdgekitError
    from edgekit.report.compare import HEADERS, Gates, compare_runs, table_rows, to_csv, to_junit

    for name in ("max_slowdown", "max_metric_drop", "max_size_growth", "noise_floor"):
        value = getattr(args, name)
        if not (value == value and 0 <= value < 1e6):  # NaN, negative or absurd
            raise EdgekitError(f"--{name.replace('_', '-')}: must be a number from 0, got {value}")
    outputs = {"json": args.json, "csv": args.csv, "junit": args.junit}
    for path in filter(None, outputs.values()):
        check_output(path, args.force, inputs=[args.run_a, args.run_b])
    if len({p for p in outputs.values() if p}) < len([p for p in outputs.values() if p]):
        raise EdgekitError("--json, --csv and --junit must be different files")
    gates = Gates(args.max_slowdown, args.max_metric_drop, args.max_size_growth, args.noise_floor)
    document = compare_runs(args.run_a, args.run_b, gates)
    print(tabulate(table_rows(document), headers=HEADERS, tablefmt="github"))
    texts = {"json": lambda: json.dumps(document, indent=1) + "\n", "csv": lambda: to_csv(document),
             "junit": lambda: to_junit(document)}
    for kind, path in outputs.items():
        if path:
            write_text_atomic(path, texts[kind](), force=args.force)
            log.info(f"wrote {path}")
    for note in document["notes"]:
        log.info(f"note: {note}")
    for failure in document["failures"]:
        print(f"regression: {failure}")
    if document["failures"]:
        return 1
    changed = [r for r in document["rows"] if r["verdict"] != "no measurable difference"]
    print("no regression" + (f" ({len(changed)} row(s) changed, see the table)" if changed else
                             ": no measurable difference"))
    return 0
