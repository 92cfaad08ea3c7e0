"""ONNX Runtime static-quantization settings, and where their defaults come from.

Defaults follow ORT's own per-ISA advice and what was measured here: on x86-64 without VNNI
(AMD EPYC, AVX2) U8 activations with S8 weights in QDQ format ran ResNet-18 at 1.8x FP32 speed,
S8S8 QOperator at 0.22x; per-channel weights are the default because depthwise convolutions
lose most of their accuracy per-tensor.

The one default that depends on the CPU is ``reduce_range``. Without VNNI, ORT's U8S8 kernels sum
pairs of u8*s8 products in 16 bits (VPMADDUBSW), which saturates when both weights of a pair are
large: on such a host the digits CNN lost 4.5 points of top-1 (100 -> 95.5), all of it in the
first convolution, and 7-bit weights (reduce_range) brought it back to 100. With VNNI or on ARM
the products are summed in 32 bits and the eighth bit is free accuracy. So with no target the
default follows this host; a target profile's ``onnxruntime:`` section overrides that, and any
command-line flag overrides the profile.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
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
        weights = "7-bit " if self.reduce_range else ""
        return f"{self.format} {a}{w} {weights}{'per-channel' if self.per_channel else 'per-tensor'}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def u8s8_saturates(machine: str, isa_flags: list[str] | set[str]) -> bool:
    """True where ORT's U8S8 kernels add u8*s8 pairs in 16 bits: x86-64 without any VNNI."""
    x86 = machine.lower() in ("x86_64", "amd64", "x86-64")
    return x86 and not ({"avx512_vnni", "avx_vnni", "avx512vnni", "amx_int8"} & set(isa_flags))


def host_u8s8_saturates() -> bool:
    """``u8s8_saturates`` for the machine this process runs on."""
    import platform

    from edgekit.runtime.device_runner import isa_flags

    return u8s8_saturates(platform.machine(), isa_flags())


def host_defaults() -> OrtQuantSettings:
    """The built-in default for quantizing to run on this very machine."""
    return OrtQuantSettings(reduce_range=host_u8s8_saturates())


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


def resolve_settings(target: str | None = None, overrides: dict[str, Any] | None = None) -> OrtQuantSettings:
    """Host default <- target profile's ``onnxruntime`` section <- explicit overrides (None = unset)."""
    values = host_defaults().as_dict()
    origin = "built-in default"
    if target:
        from edgekit.targets import load_target

        profile = load_target(target)
        values.update(profile.ort_settings)
        origin = f"target {profile.name}"
    values.update({k: v for k, v in (overrides or {}).items() if v is not None and k in values})
    return OrtQuantSettings(**values).validate(origin)
