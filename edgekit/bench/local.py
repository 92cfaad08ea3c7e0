"""Benchmark on this machine: the device runner in a child process, exactly as on a device.

Running the very folder that is pushed to boards keeps local and remote numbers comparable, gives
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

from edgekit.bench.plan import Job, settle
from edgekit.errors import EdgekitError
from edgekit.log import progress as progress_bar
from edgekit.runtime.device_runner.op_profile import RUNS_MAX

RUNNER = Path(__file__).resolve().parent.parent / "runtime" / "device_runner"  # the package a device runs
RUN_MODULE = ["-m", RUNNER.name]  # run from RUNNER's parent folder, as on a device


def runner_arguments(models: Sequence[str], runs: int, warmup: int, job: Job | None,
                     time_budget: float | None, cpus: str | None, cleanup: str | None = None,
                     profile_top: int | None = None, probe_set: str | None = None) -> list[str]:
    """Options first, then ``--`` and the artifacts: a file named ``-h.onnx`` stays a file name.
    ``--watch-stdin`` makes the runner exit as soon as its caller is gone. ``profile_top``: after
    the timed runs, a profiled pass (``min(runs, RUNS_MAX)`` inferences) keeping that many operators."""
    args = ["--runs", str(runs), "--warmup", str(warmup), "--watch-stdin"]
    if profile_top is not None:
        args += ["--profile-runs", str(min(runs, RUNS_MAX)), "--profile-top", str(profile_top)]
    if job and job.threads:
        args += ["--threads", str(job.threads)]
    if job:
        args += ["--runtime", job.runtime.name]
    if job and job.delegate:
        args += ["--delegate", job.delegate]
    if job and job.input_shape:
        args += ["--input-shape", ",".join(map(str, job.input_shape))]
    if time_budget:
        args += ["--time-budget", str(time_budget)]
    if cpus:
        args += ["--cpus", cpus]
    if cleanup:
        args += ["--cleanup", cleanup]
    if probe_set:
        args += ["--probe-set", probe_set]
    return [*args, "--", *models]


def parse_runner_output(stdout: str, where: str) -> dict[str, Any]:
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise EdgekitError(f"{where}: the runner printed no result ({stdout.strip()[-200:] or 'no output'})") from exc


def _run_runner(python: str, args: list[str], what: str, timeout: float) -> dict[str, Any]:
    """Run the device runner package with ``python``; its JSON document."""
    command = [python, *RUN_MODULE, *args]
    read_end, write_end = os.pipe()  # we hold the write end: if we die, the runner sees EOF and exits
    try:
        proc = subprocess.run(command, stdin=read_end, capture_output=True, text=True, timeout=timeout,
                              cwd=RUNNER.parent)
    except subprocess.TimeoutExpired as exc:
        raise EdgekitError(f"{what}: local benchmark did not finish in {timeout:.0f} s") from exc
    except OSError as exc:  # --python names no runnable interpreter
        raise EdgekitError(f"--python {python}: cannot run it ({exc.strerror or exc})") from exc
    finally:
        os.close(read_end)
        os.close(write_end)
    if proc.returncode < 0:
        from edgekit.runtime.verify import signal_name

        raise EdgekitError(f"{what}: the benchmark runner ({python}) crashed with "
                           f"{signal_name(-proc.returncode)}: {_last_line(proc.stderr)}")
    if not proc.stdout.strip() and proc.returncode:
        raise EdgekitError(f"{what}: the runner cannot start with {python} ({_last_line(proc.stderr)}); it needs numpy")
    return parse_runner_output(proc.stdout, "local benchmark")


def pinned_cpus(threads: int | None) -> str | None:
    """The first ``threads`` CPUs this process may use, when there are that many (else no pinning)."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return ",".join(str(c) for c in available[:threads]) if threads and len(available) >= threads else None


def bench_local(jobs: Sequence[Job], runs: int, warmup: int, time_budget: float | None = None, pin: bool = False,
                timeout: float = 1800.0, python: str | None = None, profile_top: int | None = None,
                probe_set: Path | None = None) -> dict[str, Any]:
    """The runner's JSON document for ``jobs`` measured here (by ``python``, default this interpreter),
    with ``jobs`` (those measured, in result order) and ``notes`` (runtimes skipped) added. ``pin``:
    each job on its first ``threads`` CPUs, as a target profile asks; ``probe_set``: a .npy whose
    outputs each job returns (device parity)."""
    python = python or sys.executable
    for job in jobs:
        if not job.path.is_file():
            raise EdgekitError(f"{job.path}: artifact not found")
    names = ", ".join(dict.fromkeys(str(job.path) for job in jobs))  # what a failing probe was for
    probe = _run_runner(python, ["--probe"], names, timeout)
    jobs, notes = settle(list(jobs), probe["system"].get("runtimes", {}), "local",
                         "this Python" if python == sys.executable else python, remote=False)
    documents = []
    for job in progress_bar(jobs, desc="benchmarking", unit="artifact"):  # one process each: a clean peak-memory figure
        args = runner_arguments([str(job.path.resolve())], runs, warmup, job, time_budget,
                                pinned_cpus(job.threads) if pin else None, profile_top=profile_top,
                                probe_set=str(probe_set.resolve()) if probe_set else None)
        documents.append(_run_runner(python, args, str(job.path), timeout))
    return {**merge_documents(documents), "jobs": jobs, "notes": notes}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-200:] if lines else "no output"


def merge_documents(documents: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runner documents of one artifact each -> one document (system info from the first)."""
    merged = dict(documents[0])
    merged["results"] = [r for d in documents for r in d["results"]]
    return merged
