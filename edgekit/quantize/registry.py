"""The quantization backends by name: what each writes, which function does it, what it needs installed.

``edgekit quantize --runtime`` finds its backend and output-suffix checks here (by the runtime the
INT8 file is for, the name every command uses; the old ``--backend ort|tflite`` names still work), and
the pipeline loops over the configured backends through it, so a new backend is one entry. Functions
are named, not imported, because the TFLite one pulls in TensorFlow (seconds, and an optional extra).
"""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Callable

from edgekit.errors import EdgekitError
from edgekit.extras import installed, require
from edgekit.quantize.result import QuantizeResult


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    label: str
    suffix: str                 # of the INT8 file it writes
    function: str               # "module:attribute"; called (fp32, out, calib, **options) -> QuantizeResult
    requires: tuple[str, ...]   # importable modules it needs
    runtime: str                # the runtime registry's name of what runs its output: --runtime
    extra: str | None = None    # the pip extra that installs them

    def load(self) -> Callable[..., QuantizeResult]:
        """The library function, after checking its libraries are installed."""
        if self.extra:
            require(self.extra, f"--runtime {self.runtime}")
        missing = [m for m in self.requires if not installed(m)]
        if missing:
            raise EdgekitError(f"--runtime {self.runtime}: needs {', '.join(missing)} (pip install {' '.join(missing)})")
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def check_output(self, path: str | Path) -> None:
        if not str(path).lower().endswith(self.suffix):
            raise EdgekitError(f"{path}: --runtime {self.runtime} writes a {self.suffix} file")


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("ort", "ONNX Runtime static INT8", ".onnx", "edgekit.quantize.ort.workflow:quantize_ort_workflow",
            ("onnxruntime",), "onnxruntime"),
    Backend("tflite", "TFLite full-integer INT8", ".tflite", "edgekit.quantize.tflite.quantizer:quantize_tflite",
            ("tensorflow", "onnx2tf"), "tflite", extra="tflite"),
)}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EdgekitError(f"--backend: unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return BACKENDS[name]


def backend_for(runtime: str) -> Backend:
    """The backend that quantizes for ``runtime`` (a runtime name, or an old backend name such as ``ort``)."""
    for backend in BACKENDS.values():
        if runtime in (backend.runtime, backend.name):
            return backend
    raise EdgekitError(f"--runtime: quantize writes INT8 models for {' and '.join(b.runtime for b in BACKENDS.values())}, "
                       f"not {runtime}")
