"""The quantization backends and modes by name: what each writes, which function does it, what it needs installed.

``edgekit quantize --runtime`` finds its backend and output-suffix checks here (by the runtime the
INT8 file is for, the name every command uses; the old ``--backend ort|tflite`` names still work), and
the pipeline loops over the configured backends through it, so a new backend is one entry. Functions
are named, not imported, because the TFLite one pulls in TensorFlow (seconds, and an optional extra).

A mode (``--mode``, the pipeline's ``quantize.modes``) is one entry in ``MODES``: ``static`` is the
calibrated INT8 each backend's ``function`` does; ``dynamic`` and ``fp16`` need no calibration data
and are done by each backend's entry in ``Backend.modes``.
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
    # mode -> "module:attribute" for the modes without calibration; called (fp32, out, samples, *, mode, **options)
    modes: dict[str, str] = dataclasses.field(default_factory=dict)

    def load(self, mode: str = "static") -> Callable[..., QuantizeResult]:
        """The library function of ``mode``, after checking its libraries are installed."""
        if self.extra:
            require(self.extra, f"--runtime {self.runtime}")
        missing = [m for m in self.requires if not installed(m)]
        if missing:
            raise EdgekitError(f"--runtime {self.runtime}: needs {', '.join(missing)} (pip install {' '.join(missing)})")
        module, _, attribute = (self.function if mode == "static" else self.modes[mode]).partition(":")
        return getattr(importlib.import_module(module), attribute)

    def check_output(self, path: str | Path) -> None:
        if not str(path).lower().endswith(self.suffix):
            raise EdgekitError(f"{path}: --runtime {self.runtime} writes a {self.suffix} file")


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("ort", "ONNX Runtime static INT8", ".onnx", "edgekit.quantize.ort.workflow:quantize_ort_workflow",
            ("onnxruntime",), "onnxruntime",
            modes={"dynamic": "edgekit.quantize.ort.nocalib:quantize_ort_nocalib",
                   "fp16": "edgekit.quantize.ort.nocalib:quantize_ort_nocalib"}),
    Backend("tflite", "TFLite full-integer INT8", ".tflite", "edgekit.quantize.tflite.quantizer:quantize_tflite",
            ("tensorflow", "onnx2tf"), "tflite", extra="tflite",
            modes={"dynamic": "edgekit.quantize.tflite.nocalib:quantize_tflite_nocalib",
                   "fp16": "edgekit.quantize.tflite.nocalib:quantize_tflite_nocalib"}),
)}


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    needs_calibration: bool
    stem: str                         # its artifact in a pipeline run: int8.onnx, dynamic.tflite, pruned.fp16.onnx
    labels: dict[str, str]            # backend -> what the artifact is, for the manifest and the report
    precision: str                    # the report's precision column
    options: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # backend -> options it takes


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("static", True, "int8", {b.name: b.label for b in BACKENDS.values()}, "INT8"),
    # ORT's CPU provider has ConvInteger only for uint8 x uint8: the weights are uint8 (int8 fails at session creation)
    Mode("dynamic", False, "dynamic", {"ort": "ORT dynamic INT8 (weights)", "tflite": "TFLite dynamic-range INT8"},
         "INT8 dynamic", {"ort": ("per_channel", "reduce_range")}),
    Mode("fp16", False, "fp16", {"ort": "FP16 ONNX", "tflite": "TFLite float16"}, "FP16"),
)}


def get_mode(name: str) -> Mode:
    if name not in MODES:
        raise EdgekitError(f"--mode: unknown mode {name!r} (available: {', '.join(MODES)})")
    return MODES[name]


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
