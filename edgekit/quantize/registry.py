"""The quantization backends by name: what each writes, which function does it, what it needs installed.

``edgekit quantize --backend`` takes its choices and output-suffix checks from here, and the
pipeline loops over the configured backends through it, so a new backend is one entry. Functions
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
    extra: str | None = None    # the pip extra that installs them

    def load(self) -> Callable[..., QuantizeResult]:
        """The library function, after checking its libraries are installed."""
        if self.extra:
            require(self.extra, f"--backend {self.name}")
        missing = [m for m in self.requires if not installed(m)]
        if missing:
            raise EdgekitError(f"--backend {self.name}: needs {', '.join(missing)} (pip install {' '.join(missing)})")
        module, _, attribute = self.function.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def check_output(self, path: str | Path) -> None:
        if not str(path).lower().endswith(self.suffix):
            raise EdgekitError(f"{path}: --backend {self.name} writes a {self.suffix} file")


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("ort", "ONNX Runtime static INT8", ".onnx", "edgekit.quantize.ort.workflow:quantize_ort_workflow",
            ("onnxruntime",)),
    Backend("tflite", "TFLite full-integer INT8", ".tflite", "edgekit.quantize.tflite.quantizer:quantize_tflite",
            ("tensorflow", "onnx2tf"), extra="tflite"),
)}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EdgekitError(f"--backend: unknown backend {name!r} (available: {', '.join(BACKENDS)})")
    return BACKENDS[name]
