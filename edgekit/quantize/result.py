"""What a quantization did, as one typed value both backends return.

The pipeline and the CLI read attributes, and ``stage()`` is the one place that turns a result into
the manifest's ``quantize`` stage (keys that ``report/collect.py`` and ``evaluate`` read: ``stage``,
``backend``, ``label``, and for ORT the flattened settings ``activation_type``, ``weight_type``,
``reduce_range``...; ``fidelity``: INT8 vs FP32 cosine and top-1 agreement).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.quantize.fidelity import Fidelity

SENSITIVITY_TOP = 25  # rows of the per-layer ranking kept in the manifest


@dataclasses.dataclass
class QuantizeResult:
    backend: str                      # a name in edgekit.quantize.registry
    label: str                        # "QDQ U8S8 per-channel", "TFLite full-integer INT8"
    paths: dict[str, Path]            # {"int8": ...} and, for TFLite, {"fp32": reference}
    settings: dict[str, Any]          # the backend's settings, flattened into the stage
    calibration: dict[str, Any]
    full_integer: bool = False        # no op computes in float (TFLite checks it; ORT keeps float I/O)
    float_ops: list[str] = dataclasses.field(default_factory=list)
    nodes_excluded: list[str] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    sensitivity: list[dict[str, Any]] | None = None  # worst first; None when not computed
    sensitivity_note: str | None = None               # why it is None, when it was asked for
    warnings: list[str] = dataclasses.field(default_factory=list)  # written to the manifest: they follow from the inputs
    details: dict[str, Any] = dataclasses.field(default_factory=dict)  # backend extras: auto table, budget, ops
    fidelity: "Fidelity | None" = None  # INT8 vs FP32 on held-out samples (None: could not be measured)
    mode: str = "static"              # edgekit.quantize.registry.MODES; paths["int8"] is the quantized model in any mode

    @property
    def output(self) -> Path:
        return self.paths["int8"]

    def artifacts(self) -> list[Path]:
        """Every file written, the INT8 model first."""
        return [self.paths["int8"], *(p for k, p in self.paths.items() if k != "int8")]

    def printed_warnings(self) -> list[str]:
        """What the user hears at quantize time (``warning: ...`` on stderr, kept by ``-q``): the
        manifest's warnings, and INT8 slower than FP32 here. That one is printed, not written: its
        figures are timings, which vary run to run; the manifest keeps them apart, under
        ``int8_vs_fp32_speed``, so two runs give one manifest."""
        from edgekit.quantize import speed

        pace = self.details.get("int8_vs_fp32_speed")
        slower = pace and speed.warning(pace, "INT8" if self.mode == "static" else self.label)
        return self.warnings + ([slower] if slower else [])

    def say_warnings(self, log: logging.Logger) -> None:
        for warning in self.printed_warnings():
            log.warning(warning)

    def stage(self) -> dict[str, Any]:
        """The manifest stage for the INT8 artifact."""
        stage: dict[str, Any] = {"stage": "quantize", "backend": self.backend, "mode": self.mode, **self.settings, "label": self.label,
                                 "full_integer": self.full_integer, "float_ops": list(self.float_ops),
                                 "nodes_excluded": list(self.nodes_excluded), "calibration": self.calibration,
                                 "seconds": {k: round(v, 2) for k, v in self.timings.items()}}
        if self.sensitivity is not None or self.sensitivity_note is not None:
            stage["sensitivity"] = None if self.sensitivity is None else self.sensitivity[:SENSITIVITY_TOP]
        if self.sensitivity_note:
            stage["sensitivity_note"] = self.sensitivity_note
        if self.fidelity is not None:
            stage["fidelity"] = self.fidelity.as_dict()
        if self.warnings:
            stage["warnings"] = list(self.warnings)
        return {**stage, **self.details}
