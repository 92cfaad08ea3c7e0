"""Helpers shared by the benchmark scripts: side-by-side timing and one summary format.

The machine is shared and noisy, so variants are timed *interleaved* (round-robin blocks) and
compared as ratios measured in the same run, never against a stored absolute number.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def interleaved_p50_ms(functions: dict[str, Callable[[], Any]], rounds: int = 10, per_round: int = 10,
                       warmup: int = 5) -> dict[str, float]:
    """p50 latency (ms) of each function, measured in alternating blocks so drift hits all alike."""
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: 1000.0 * statistics.median(values) for name, values in samples.items()}


def row_labelled(table: list[list[Any]], label: str, column: int = 0) -> list[Any]:
    """The one row of ``table`` whose cell ``column`` is ``label``: a summary line quotes the row it
    summarises by name, never by position (a position picked the 8-bit-weights row once and
    summarised it as ORT's defaults)."""
    found = [row for row in table if len(row) > column and row[column] == label]
    if len(found) != 1:
        raise KeyError(f"{len(found)} rows labelled {label!r} in the table, expected exactly one")
    return found[0]


def save_summary(name: str, rows: list[dict[str, Any]], **context: Any) -> None:
    """rows: {"comparison", "metric", "value", "target"?}; run_all.py prints them as one table.
    ``context``: what the figures depend on beyond the code (the machine: ORT's INT8 differs with VNNI)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"benchmark": name, **context, "rows": rows}, indent=1) + "\n")


def load_rows(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """A resumable sweep's JSON-lines rows by ``row[key]`` (the last row of a name wins)."""
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row[key]: row for row in rows}


def save_row(path: Path, row: dict[str, Any]) -> None:
    """Append (a --force re-run appends again; the last row of a name wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        file.write(json.dumps(row) + "\n")


def markdown(rows: list[list[Any]], headers: list[str]) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="github")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
