"""ONNX Runtime static-quantization settings: one model for the profile, the pipeline and the CLI.

``OrtQuantSettings`` *is* a target profile's ``onnxruntime:`` section, the pipeline file's
``quantize.ort`` section and the source of ``edgekit quantize``'s ORT flags (``add_arguments``), so
a new setting is declared once. Keys a source leaves out are not set (pydantic's
``model_fields_set``), which is how resolution tells "omitted" from "chosen":
host default <- target profile <- explicit values (pipeline section or command-line flags).

Defaults follow ORT's own per-ISA advice and what was measured here: on x86-64 without VNNI
(AMD EPYC, AVX2) U8 activations with S8 weights in QDQ format ran ResNet-18 at 1.8x FP32 speed,
S8S8 QOperator at 0.22x; per-channel weights are the default because depthwise convolutions
lose most of their accuracy per-tensor. The one CPU-dependent default is ``reduce_range`` (None =
decided by the ISA, see :mod:`edgekit.isa`): 7-bit weights exactly where U8S8 saturates.
"""
from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Protocol

from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import EdgekitError
from edgekit.isa import host_u8s8_saturates, u8s8_saturates
from edgekit.yamlfile import validate


class OrtQuantSettings(BaseModel):
    """ORT static INT8 settings; ``reduce_range=None`` means "decided by the CPU it runs on"."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["QDQ", "QOperator"] = Field("QDQ", description="QDQ (portable, fast on U8S8) or QOperator")
    activation_type: Literal["uint8", "int8"] = Field("uint8", description="activation integer type")
    weight_type: Literal["int8", "uint8"] = Field("int8", description="weight integer type")
    per_channel: bool = Field(True, description="one weight scale per output channel")
    reduce_range: bool | None = Field(None, description="7-bit weights; default: on where U8S8 saturates "
                                                        "(x86-64 without VNNI), else off")
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = Field("MinMax", description="range estimator")
    average_ranges: bool = Field(False, description="MinMax: ranges are the mean of each sample's min/max, not the "
                                                    "extremes over all samples (NNCF's estimator)")
    quantize_ops: Literal["all", "compute"] = Field("all", description="all: every operator ORT can quantize; compute: "
                                                    "Conv, MatMul and Gemm only, the rest stays float (NNCF-style); "
                                                    "also --runtime tflite: all = full-integer, compute = "
                                                    "Conv/FullyConnected/BatchMatMul only, labelled not full-integer")

    def label(self) -> str:
        a = "U8" if self.activation_type == "uint8" else "S8"
        w = "U8" if self.weight_type == "uint8" else "S8"
        weights = "7-bit " if self.reduce_range else ""
        scope = ", Conv/MatMul/Gemm only" if self.quantize_ops == "compute" else ""
        return f"{self.format} {a}{w} {weights}{'per-channel' if self.per_channel else 'per-tensor'}{scope}"

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def explicit(self) -> dict[str, Any]:
        """Only what its source set (a ``reduce_range: null`` leaves the decision to the CPU)."""
        return {k: v for k, v in self.model_dump(include=self.model_fields_set).items() if v is not None}

    def for_isa(self, machine: str, isa_flags: Iterable[str]) -> "OrtQuantSettings":
        """These settings with ``reduce_range`` decided for that CPU where it is left open."""
        if self.reduce_range is not None:
            return self
        return self.model_copy(update={"reduce_range": u8s8_saturates(machine, isa_flags)})

    def for_host(self) -> "OrtQuantSettings":
        """These settings with ``reduce_range`` decided for this machine where it is left open."""
        if self.reduce_range is not None:
            return self
        return self.model_copy(update={"reduce_range": host_u8s8_saturates()})


class HasOrtSettings(Protocol):
    """A target profile, as far as resolution is concerned (no import of edgekit.targets here)."""

    name: str

    @property
    def ort_settings(self) -> dict[str, Any]: ...


def host_defaults() -> OrtQuantSettings:
    """The built-in default for quantizing to run on this very machine."""
    return OrtQuantSettings().for_host()


def resolve_settings(
    target: HasOrtSettings | None = None,
    explicit: OrtQuantSettings | Mapping[str, Any] | None = None,
    origin: str = "quantization settings",
) -> OrtQuantSettings:
    """Host default <- ``target``'s ``onnxruntime`` section (reduce_range by its ISA) <- ``explicit``
    (an ``OrtQuantSettings``: the keys it set; a mapping: its non-None values)."""
    if isinstance(target, (str, Path)):
        raise TypeError("resolve_settings takes a loaded profile (edgekit.targets.load_target(name)), not a name")
    values = host_defaults().as_dict()
    if target is not None:
        values.update(target.ort_settings)
        origin = f"target {target.name}"
    if isinstance(explicit, OrtQuantSettings):
        values.update(explicit.explicit())
    else:
        values.update({k: v for k, v in (explicit or {}).items() if v is not None})
    return validate(OrtQuantSettings, values, origin)


def add_arguments(group: argparse._ActionsContainer) -> None:
    """One command-line flag per field (``--activation-type``), choices from its ``Literal``."""
    for name, field in OrtQuantSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kinds = [a for a in typing.get_args(field.annotation) if a is not type(None)] or [field.annotation]
        if kinds == [bool]:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
        else:
            group.add_argument(flag, choices=typing.get_args(field.annotation), default=None, help=field.description)


def from_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given (``add_arguments``'s), as explicit values for ``resolve_settings``."""
    return {name: getattr(args, name) for name in OrtQuantSettings.model_fields if getattr(args, name) is not None}


def host_numerics_warning(artifact: str | Path) -> str | None:
    """Why an accuracy measured here may not be the device's: ORT INT8 arithmetic depends on the ISA."""
    from edgekit.manifest import read_manifest

    try:
        manifest = read_manifest(artifact)
    except EdgekitError:
        return None
    stages = [s for s in (manifest or {}).get("stages", []) if s.get("stage") == "quantize" and s.get("backend") == "ort"]
    if not stages:
        return None
    last = stages[-1]
    risky = last.get("activation_type") == "uint8" and last.get("weight_type") == "int8" and not last.get("reduce_range")
    if risky and host_u8s8_saturates():
        return (f"{Path(artifact).name}: U8S8 with 8-bit weights saturates on this x86-64 CPU without VNNI; "
                "accuracy measured here can be lower than on a VNNI or ARM device (quantize with --reduce-range for this host)")
    return None
