"""ONNX Runtime static-quantization settings, and where their defaults come from.

Defaults follow ORT's own per-ISA advice and what was measured here: on x86-64 without VNNI
(this machine: AMD EPYC, AVX2) U8 activations with S8 weights in QDQ format run at 0.95-1.15x FP32
speed, while S8S8 QOperator ran at 0.33x; per-channel weights are the default because depthwise
convolutions lose most of their accuracy per-tensor. A target profile's ``onnxruntime:`` section
overrides these; any command-line flag overrides the profile.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from edgekit.errors import EdgekitError

FORMATS = ("QDQ", "QOperator")
TYPES = ("uint8", "int8")
METHODS = ("MinMax", "Entropy", "Percentile")


@dataclasses.dataclass
class OrtQuantSettings:
    format: str = "QDQ"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    calibrate_method: str = "MinMax"

    def validate(self, origin: str = "quantization settings") -> "OrtQuantSettings":
        checks = (("format", FORMATS), ("activation_type", TYPES), ("weight_type", TYPES),
                  ("calibrate_method", METHODS))
        for key, allowed in checks:
            if getattr(self, key) not in allowed:
                raise EdgekitError(f"{origin}: key '{key}': {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        return self

    def label(self) -> str:
        a = "U8" if self.activation_type == "uint8" else "S8"
        w = "U8" if self.weight_type == "uint8" else "S8"
        return f"{self.format} {a}{w} {'per-channel' if self.per_channel else 'per-tensor'}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_settings(target: str | None = None, overrides: dict[str, Any] | None = None) -> OrtQuantSettings:
    """Built-in default <- target profile's ``onnxruntime`` section <- explicit overrides (None = unset)."""
    values = OrtQuantSettings().as_dict()
    origin = "built-in default"
    if target:
        from edgekit.targets import load_target

        profile = load_target(target)
        values.update(profile.ort_settings)
        origin = f"target {profile.name}"
    values.update({k: v for k, v in (overrides or {}).items() if v is not None and k in values})
    return OrtQuantSettings(**values).validate(origin)
