"""Target profiles: what a device is, and the settings every stage should use for it.

A profile (``targets/*.yaml``, shipped in the package; users add files with ``--targets-dir`` or
``EDGEKIT_TARGETS_DIR``) names the CPU and its ISA features, the threads to use, the runtimes it
prefers, ONNX Runtime quantization settings (the ones ORT documents per ISA), TFLite settings,
the channel multiple pruning should round to, and optionally how to reach the device over SSH.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekit.errors import EdgekitError
from edgekit.yamlfile import load_validated


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrtSection(_Strict):
    format: Literal["QDQ", "QOperator"] = "QDQ"
    activation_type: Literal["uint8", "int8"] = "uint8"
    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    reduce_range: bool | None = None  # None: 7-bit weights exactly where U8S8 saturates (see quantize.ort.settings)
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"


class TfliteSection(_Strict):
    delegate: Literal["xnnpack", "none"] = "xnnpack"
    threads: int | None = None


class PruningSection(_Strict):
    channel_multiple: int = Field(8, ge=1)


class SshSection(_Strict):
    host: str | None = None
    user: str | None = None
    port: int | None = None
    python: str = "python3"
    workdir: str | None = None


class TargetProfile(_Strict):
    name: str
    description: str
    arch: Literal["x86_64", "aarch64", "armv7l"]
    isa_features: list[str] = Field(default_factory=list)
    cores: int = Field(ge=1)
    threads: int = Field(ge=1)
    runtimes: list[Literal["onnxruntime", "tflite"]]
    onnxruntime: OrtSection = Field(default_factory=OrtSection)
    tflite: TfliteSection = Field(default_factory=TfliteSection)
    pruning: PruningSection = Field(default_factory=PruningSection)
    ssh: SshSection | None = None
    source: str | None = Field(default=None, exclude=True)

    @property
    def ort_settings(self) -> dict[str, Any]:
        from edgekit.quantize.ort.settings import u8s8_saturates

        settings = self.onnxruntime.model_dump()
        if settings["reduce_range"] is None:
            settings["reduce_range"] = u8s8_saturates(self.arch, self.isa_features)
        return settings


def shipped_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "_shipped" / "targets"


def search_dirs(targets_dir: str | Path | None = None) -> list[Path]:
    """User folders first (``--targets-dir``, then ``EDGEKIT_TARGETS_DIR``), the shipped ones last."""
    dirs = [Path(d) for d in (targets_dir, os.environ.get("EDGEKIT_TARGETS_DIR")) if d]
    for folder in dirs:
        if not folder.is_dir():
            raise EdgekitError(f"{folder}: targets folder not found")
    return [*dirs, shipped_dir()]


def load_profile_file(path: str | Path) -> TargetProfile:
    profile = load_validated(TargetProfile, path, "target profile")
    profile.source = str(path)
    return profile


def list_targets(targets_dir: str | Path | None = None) -> list[TargetProfile]:
    seen: dict[str, TargetProfile] = {}
    for folder in search_dirs(targets_dir):
        for path in sorted(folder.glob("*.yaml")):
            profile = load_profile_file(path)
            seen.setdefault(profile.name, profile)
    return sorted(seen.values(), key=lambda p: p.name)


def load_target(name_or_path: str | Path, targets_dir: str | Path | None = None) -> TargetProfile:
    """A profile by name (user folders shadow shipped ones) or by the path of a YAML file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        return load_profile_file(text)
    for folder in search_dirs(targets_dir):
        candidate = folder / f"{text}.yaml"
        if candidate.is_file():
            return load_profile_file(candidate)
    names = ", ".join(p.name for p in list_targets(targets_dir))
    raise EdgekitError(f"--target: no target profile named {text!r} (available: {names})")
