#!/usr/bin/env python3
"""Benchmark models on this machine and print one JSON document: the code that runs on a device.

This folder is pushed as-is to devices, so it imports nothing from edgekit and needs only numpy
plus the runtime of the model (see ``registry.py``). edgekit uses the very same code locally, so
a measurement here and one on a board differ by the board, not by the harness. Run it as a
package from the folder that holds it::

    python3 -m device_runner --runs 200 --warmup 10 --threads 4 -- model.tflite [model2.onnx ...]

(``--`` keeps an artifact named like an option, ``-h.onnx``, a file name.) Under edgekit it runs
with ``--watch-stdin``: it exits within a second once its stdin closes (the SSH channel or the
local parent is gone) or its parent dies, and with ``--cleanup`` it removes its own
``edgekit.XXXXXX`` directory on the way out, so a killed client leaves nothing behind on a board.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

from .base import Runner
from .registry import NAMES, choose, require_installed
from .system import cpu_busy_fraction, peak_rss_bytes, read_temperature, system_info

RUNNER_VERSION = 3
MAX_PROBE_VALUES = 1 << 22  # outputs returned for parity at most (16 MB of float32 as base64 in the JSON)


def open_runner(path: str, threads: int | None = None, runtime: str | None = None, layout: str | None = None,
                delegate: str | None = None) -> Runner:
    """Open ``path`` on ``runtime`` (a registry name or alias), else on the default runtime for its
    suffix. ValueError: unknown runtime or suffix; RuntimeMissing: known but not installed here."""
    spec = choose(path, runtime)
    require_installed(spec, sys.executable)
    return spec.runner_class()(path, threads, layout, delegate)


def time_loop(run: Callable[[], Any], warmup: int, runs: int, time_budget: float | None = None) -> list[float]:
    """Latencies in seconds of ``runs`` calls after ``warmup`` calls; stops early past ``time_budget``."""
    for _ in range(warmup):
        run()
    latencies: list[float] = []
    clock = time.perf_counter
    deadline = clock() + time_budget if time_budget else None
    for _ in range(runs):
        start = clock()
        run()
        latencies.append(clock() - start)
        if deadline is not None and clock() > deadline and len(latencies) >= 5:
            break
    return latencies


def benchmark(path: str, runs: int, warmup: int, threads: int | None, runtime: str | None,
              time_budget: float | None, layout: str | None = None, delegate: str | None = None,
              profile_runs: int = 0, profile_top: int = 10, probe_set: str | None = None,
              input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """Load, time the first inference, then time ``runs`` inferences on fixed random inputs (of
    ``input_shape`` where the model's input has dynamic dimensions); with
    ``profile_runs``, then a separate profiled pass (per-operator time, see op_profile.py); with
    ``probe_set`` (a float NCHW .npy the host sent), the outputs on it, for device parity."""
    start = time.perf_counter()
    runner = open_runner(path, threads, runtime, layout, delegate)
    load_s = time.perf_counter() - start
    feeds = runner.example_feeds(shape=input_shape)
    start = time.perf_counter()
    runner.run(feeds)
    first_s = time.perf_counter() - start
    temp_before = read_temperature()
    busy_before = cpu_busy_fraction()
    latencies = time_loop(lambda: runner.run(feeds), warmup, runs, time_budget)
    result = {
        "artifact": os.path.basename(path),
        "size_bytes": os.path.getsize(path),
        "runtime": runner.backend,
        "runtime_package": runner.package,
        "runtime_version": runner.version,
        "threads": threads,
        "model": runner.describe(),
        "input_shape": [int(d) for d in feeds[0].shape] if feeds else [],  # what was timed
        "load_s": load_s,
        "first_inference_s": first_s,
        "warmup": warmup,
        "latencies_s": latencies,
        "cpu_busy_before": busy_before,
        "temperature_before_c": temp_before,
        "temperature_after_c": read_temperature(),
        "peak_rss_bytes": peak_rss_bytes(),
    }
    if hasattr(runner, "delegate"):
        result["delegate"] = runner.delegate
    if profile_runs:
        result["profile"] = profile(runner, feeds, profile_runs, profile_top)
    if probe_set:
        result["probe_outputs"] = probe_outputs(runner, probe_set)
    return result


def probe_outputs(runner: Runner, probe_set: str) -> dict[str, Any]:
    """The first output on the host's probe inputs, as float32 bytes in base64 (exact, so the host
    compares what this device computed, not a rounded copy); an error entry when they do not fit."""
    import base64

    import numpy as np

    try:
        outputs = np.ascontiguousarray(runner.predict(np.load(probe_set, allow_pickle=False)), dtype=np.float32)
    except Exception as exc:  # a probe set of another shape: parity is not measured, timings stand
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    if outputs.size > MAX_PROBE_VALUES:
        return {"error": f"{outputs.size} output values exceed the {MAX_PROBE_VALUES} returned at most"}
    return {"shape": list(outputs.shape), "dtype": "float32", "base64": base64.b64encode(outputs.tobytes()).decode()}


def profile(runner: Runner, feeds: list[Any], runs: int, top: int) -> dict[str, Any]:
    """The runner's per-operator profile; a profiler failure costs the profile, never the latencies."""
    from .op_profile import not_available

    try:
        return runner.profile(feeds, runs, top)
    except Exception as exc:  # runtime-specific profiler errors
        return not_available(f"profiling failed ({type(exc).__name__}: {str(exc)[:200]})")


def shape_argument(text: str) -> list[int]:
    """``1,3,640,640`` -> [1, 3, 640, 640]: positive sizes, comma-separated."""
    try:
        shape = [int(part) for part in text.split(",")]
    except ValueError:
        shape = []
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive sizes separated by commas, e.g. 1,3,640,640")
    return shape


def failure(path: str, runtime: str | None, exc: Exception) -> dict[str, Any]:
    """A per-model error entry (a missing runtime says what to install: see registry.RuntimeMissing)."""
    return {"artifact": os.path.basename(path), "runtime": runtime, "error": f"{type(exc).__name__}: {exc}"}


def own_dir() -> str | None:
    """The runner's own temporary directory on a device; None when it runs from a checkout."""
    folder = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # above this package
    return folder if os.path.basename(folder).startswith("edgekit.") else None


def remove_own_dir() -> None:
    folder = own_dir()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def abort(code: int, cleanup: bool) -> None:
    """Leave now, from any thread: the client is gone, nobody will read a result."""
    if cleanup:
        remove_own_dir()
    os._exit(code)


def stdin_closed(fd: int, wait: float) -> bool:
    """True once ``fd`` reads end-of-file (any data is discarded)."""
    try:
        ready, _, _ = select.select([fd], [], [], wait)
        return bool(ready) and not os.read(fd, 65536)
    except (OSError, ValueError):  # no usable stdin: rely on the parent check alone
        time.sleep(wait)
        return False


def start_watchdog(cleanup: bool) -> None:
    """Exit within a second of losing the client (stdin EOF, or our parent replaced by init) and on
    SIGTERM/SIGHUP/SIGINT: without this a dropped SSH session leaves the runner busy until timeout."""
    parent = os.getppid()
    fd = sys.stdin.fileno() if sys.stdin is not None else -1

    def watch() -> None:
        while not (fd >= 0 and stdin_closed(fd, 1.0)) and os.getppid() == parent:
            if fd < 0:
                time.sleep(1.0)
        abort(3, cleanup)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: abort(128 + number, cleanup))
    threading.Thread(target=watch, name="edgekit-watchdog", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="device_runner", description="Benchmark models; prints JSON.")
    parser.add_argument("models", nargs="*")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runtime", default=None, help=f"one of {', '.join(NAMES)} (default: by suffix)")
    parser.add_argument("--delegate", default=None, help="TFLite: xnnpack (the default) or none")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds per model at most")
    parser.add_argument("--profile-runs", type=int, default=0,
                        help="after timing, this many profiled inferences: per-operator time (0: none)")
    parser.add_argument("--profile-top", type=int, default=10, help="slowest operators kept in the profile")
    parser.add_argument("--input-shape", type=shape_argument, default=None,
                        help="the first input's shape where the model leaves dimensions dynamic, e.g. 1,3,640,640")
    parser.add_argument("--probe-set", help="float NCHW .npy: return each model's first output on it (parity)")
    parser.add_argument("--cpus", help="pin to these CPUs, e.g. 0,1 (Linux)")
    parser.add_argument("--probe", action="store_true", help="only report system and runtimes")
    parser.add_argument("--serve", action="store_true",
                        help="open the one model and run the tensors its caller sends on stdin (see serve.py)")
    parser.add_argument("--watch-stdin", action="store_true",
                        help="exit as soon as stdin closes or the parent dies (the client is gone)")
    parser.add_argument("--cleanup", choices=("abort", "always"),
                        help="remove this runner's own edgekit.* directory when aborted, or also at the end")
    args = parser.parse_args(argv)
    if args.serve:
        from .serve import serve

        if len(args.models) != 1:
            parser.error("--serve takes exactly one model")
        sys.stdout.flush()
        frames = os.fdopen(os.dup(1), "wb")  # the frames' own channel: whatever a runtime prints to
        os.dup2(2, 1)                        # file descriptor 1 goes to stderr, not into a frame
        return serve(lambda: open_runner(args.models[0], args.threads, args.runtime), sys.stdin.buffer, frames)
    if args.watch_stdin:
        start_watchdog(cleanup=args.cleanup is not None)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    document: dict[str, Any] = {"runner_version": RUNNER_VERSION, "system": system_info(), "results": []}
    if not args.probe:
        for model in args.models:
            try:
                document["results"].append(
                    benchmark(model, args.runs, args.warmup, args.threads, args.runtime, args.time_budget,
                              delegate=args.delegate, profile_runs=args.profile_runs, profile_top=args.profile_top,
                              probe_set=args.probe_set, input_shape=args.input_shape))
            except Exception as exc:  # reported per model, the others still run
                document["results"].append(failure(model, args.runtime, exc))
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.cleanup == "always":
        remove_own_dir()
    return 0 if all("error" not in r for r in document["results"]) else 1

