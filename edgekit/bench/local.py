"""Benchmark on this machine: the device runner in a child process, exactly as on a device.

Running the very file that is pushed to boards keeps local and remote numbers comparable, gives
each measurement a fresh process (clean peak-memory figure, no allocator state from edgekit), and
pins threads and CPUs as the target profile says.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from edgekit.errors import EdgekitError

RUNNER = Path(__file__).resolve().parent.parent / "runtime" / "device_runner.py"


def runner_arguments(models: Sequence[str], runs: int, warmup: int, threads: int | None,
                     runtime: str | None, time_budget: float | None, cpus: str | None,
                     cleanup: str | None = None) -> list[str]:
    """Options first, then ``--`` and the artifacts: a file named ``-h.onnx`` stays a file name.
    ``--watch-stdin`` makes the runner exit as soon as its caller is gone."""
    args = ["--runs", str(runs), "--warmup", str(warmup), "--watch-stdin"]
    if threads:
        args += ["--threads", str(threads)]
    if runtime:
        args += ["--runtime", runtime]
    if time_budget:
        args += ["--time-budget", str(time_budget)]
    if cpus:
        args += ["--cpus", cpus]
    if cleanup:
        args += ["--cleanup", cleanup]
    return [*args, "--", *models]


def parse_runner_output(stdout: str, where: str) -> dict[str, Any]:
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise EdgekitError(f"{where}: the runner printed no result ({stdout.strip()[-200:] or 'no output'})") from exc


def bench_local(models: Sequence[Path], runs: int, warmup: int, threads: int | None = None,
                runtime: str | None = None, time_budget: float | None = None, cpus: str | None = None,
                timeout: float = 1800.0, python: str | None = None) -> dict[str, Any]:
    """The runner's JSON document for ``models`` measured here (by ``python``, default this interpreter)."""
    for model in models:
        if not Path(model).is_file():
            raise EdgekitError(f"{model}: artifact not found")
    documents = []
    for model in models:  # one process each: a clean peak-memory figure per artifact
        command = [python or sys.executable, str(RUNNER), *runner_arguments([str(model)], runs, warmup, threads, runtime,
                                                                  time_budget, cpus)]
        read_end, write_end = os.pipe()  # we hold the write end: if we die, the runner sees EOF and exits
        try:
            proc = subprocess.run(command, stdin=read_end, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise EdgekitError(f"{model}: local benchmark did not finish in {timeout:.0f} s") from exc
        except OSError as exc:  # --python names no runnable interpreter
            raise EdgekitError(f"--python {command[0]}: cannot run it ({exc.strerror or exc})") from exc
        finally:
            os.close(read_end)
            os.close(write_end)
        if proc.returncode < 0:
            from edgekit.runtime.verify import signal_name

            raise EdgekitError(f"{model}: the benchmark runner ({command[0]}) crashed with "
                               f"{signal_name(-proc.returncode)}: {_last_line(proc.stderr)}")
        documents.append(parse_runner_output(proc.stdout, "local benchmark"))
    return merge_documents(documents)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "no output"


def merge_documents(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runner documents of one artifact each -> one document (system info from the first)."""
    merged = dict(documents[0])
    merged["results"] = [r for d in documents for r in d["results"]]
    return merged
