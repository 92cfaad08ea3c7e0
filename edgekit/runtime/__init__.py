"""Runtimes: one interface over ONNX Runtime, the TFLite interpreter and OpenVINO.

The implementation lives in :mod:`edgekit.runtime.device_runner`, a self-contained folder that is
also pushed to devices for benchmarking over SSH; its ``registry`` is the one table of runtimes.
Here, in edgekit's own process, a runtime is opened inside :func:`edgekit.log.native_output`: the
TFLite interpreter announces its XNNPACK delegate from C++ on file descriptor 2 ("INFO: Created
TensorFlow Lite XNNPACK delegate for CPU."), which is its line, not edgekit's (shown with -v).
"""
from __future__ import annotations

import sys
from typing import Any

from edgekit.log import native_output
from edgekit.runtime.device_runner import Runner, TensorInfo, time_loop
from edgekit.runtime.device_runner import open_runner as _open_runner
from edgekit.runtime.device_runner.registry import choose, require_installed

__all__ = ["Runner", "TensorInfo", "open_runner", "time_loop"]


def open_runner(path: str, threads: int | None = None, runtime: str | None = None, **options: Any) -> Runner:
    """:func:`edgekit.runtime.device_runner.open_runner`, with the runtime's own chatter caught; a
    runtime the registry marks ``in_child`` runs in a child process (:mod:`edgekit.runtime.child`)."""
    spec = choose(path, runtime)
    if spec.in_child and not options:
        from edgekit.runtime.child import ChildRunner

        require_installed(spec, sys.executable)
        return ChildRunner(path, threads, spec.name)
    with native_output():
        return _open_runner(path, threads, runtime, **options)
