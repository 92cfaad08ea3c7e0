"""Proofs about a converted ``.tflite``: it is really full-integer, and it really runs.

"Runs" is checked in a child process because a bad flatbuffer can *abort* the interpreter (a
naive INT8 conversion of ResNet-18 did here): that must become a clear error, never a crash of
edgekit, and the artifact must not be renamed into place.
"""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from edgekit.errors import EdgekitError

_RUN_CHECK = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[2])
from device_runner import open_runner
runner = open_runner(sys.argv[1], threads=1)
outputs = runner.run(runner.example_feeds())
assert all(np.all(np.isfinite(o.astype(np.float64))) for o in outputs), "non-finite output"
print("ok")
"""


def float_ops(path: str | Path) -> list[str]:
    """Ops (other than the boundary QUANTIZE/DEQUANTIZE) that read or write float tensors."""
    from edgekit.inspect import inspect_tflite

    return inspect_tflite(path)["float_ops"]


def check_runs(path: str | Path, label: str, timeout: float = 120.0) -> None:
    """Allocate and invoke the model in a child interpreter; a crash or hang becomes an EdgekitError."""
    runner_dir = Path(__file__).resolve().parents[2] / "runtime"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _RUN_CHECK, str(path), str(runner_dir)],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise EdgekitError(f"{label}: the TFLite interpreter did not finish one inference in {timeout:.0f} s") from exc
    if proc.returncode == 0:
        return
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise EdgekitError(f"{label}: the converted model crashed the TFLite interpreter ({name}); nothing was written")
    last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
    raise EdgekitError(f"{label}: the converted model does not run in the TFLite interpreter ({last[:300]})")
