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

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edgekit.errors import EdgekitError
from edgekit.quantize.ort.settings import OrtQuantSettings
from edgekit.yamlfile import load_validated


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Bounds, and why. cores: 1..1024, the most CPUs Linux boards and phones report (a larger number
# is a typo that would set absurd thread counts). threads: 1..cores, since more inference threads
# than cores only measures contention. channel_multiple: 1..256, the widest SIMD/accelerator tile
# (AVX-512 int8 = 64 lanes, NPUs up to 256); beyond it pruning would round every layer to zero or
# to its full width. ssh.port: 1..65535, what TCP allows. Host, user, python and workdir reach an
# ssh command line: no whitespace or control characters, and host/user may not start with "-"
# (ssh would read ``-oProxyCommand=...`` as an option).
_SSH_WORD = r"^[^\s\-][^\s]*$"
_NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"


class TfliteSection(_Strict):
    """How ``edgekit bench`` runs .tflite artifacts for this target: ``threads`` (default: the
    profile's) and ``delegate`` (``none``: the builtin kernels without the default XNNPACK delegate)."""

    delegate: Literal["xnnpack", "none"] = "xnnpack"
    threads: int | None = Field(None, ge=1, le=1024)


class PruningSection(_Strict):
    channel_multiple: int = Field(8, ge=1, le=256)


class SshSection(_Strict):
    host: str | None = Field(None, pattern=_SSH_WORD, max_length=253)
    user: str | None = Field(None, pattern=_SSH_WORD, max_length=64)
    port: int | None = Field(None, ge=1, le=65535)
    python: str = Field("python3", pattern=_NO_CONTROL, min_length=1)
    workdir: str | None = Field(None, pattern=_NO_CONTROL)


class TargetProfile(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=64)  # goes into file names
    description: str
    arch: Literal["x86_64", "aarch64", "armv7l"]
    isa_features: list[str] = Field(default_factory=list)
    cores: int = Field(ge=1, le=1024)
    threads: int = Field(ge=1, le=1024)
    runtimes: list[str] = Field(min_length=1)  # registry names: an .onnx is measured on each listed one
    onnxruntime: OrtQuantSettings = Field(default_factory=OrtQuantSettings)  # reduce_range omitted: by arch/isa_features
    tflite: TfliteSection = Field(default_factory=TfliteSection)
    pruning: PruningSection = Field(default_factory=PruningSection)
    ssh: SshSection | None = None
    source: str | None = Field(default=None, exclude=True)

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, value: list[str]) -> list[str]:
        from edgekit.runtime.registry import NAMES

        unknown = [name for name in value if name not in NAMES]
        if unknown:
            raise ValueError(f"unknown runtime {unknown[0]!r} (known: {', '.join(NAMES)})")
        return value

    @field_validator("threads")
    @classmethod
    def _threads_fit_cores(cls, value: int, info: ValidationInfo) -> int:
        _check_fits_cores(value, info, "")
        return value

    @field_validator("tflite")
    @classmethod
    def _tflite_threads_fit_cores(cls, value: TfliteSection, info: ValidationInfo) -> TfliteSection:
        _check_fits_cores(value.threads, info, "threads ")
        return value

    @property
    def ort_settings(self) -> dict[str, Any]:
        """The ``onnxruntime`` section with ``reduce_range`` decided by this profile's CPU."""
        return self.onnxruntime.for_isa(self.arch, self.isa_features).as_dict()


def _check_fits_cores(threads: int | None, info: ValidationInfo, label: str) -> None:
    """More inference threads than cores only measures contention."""
    cores = info.data.get("cores")
    if cores is not None and threads is not None and threads > cores:
        raise ValueError(f"{label}{threads} exceeds cores ({cores})")


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


def resolve_profiles(targets_dir: str | Path | None = None) -> dict[str, TargetProfile]:
    """Every profile by its ``name``: the one resolver behind ``targets list``, ``targets show``
    and ``--target``. User folders come first, so a user profile shadows a shipped one of the same
    name, whatever its file is called."""
    seen: dict[str, TargetProfile] = {}
    for folder in search_dirs(targets_dir):
        for path in sorted(folder.glob("*.yaml")):
            profile = load_profile_file(path)
            seen.setdefault(profile.name, profile)
    return seen


def list_targets(targets_dir: str | Path | None = None) -> list[TargetProfile]:
    return sorted(resolve_profiles(targets_dir).values(), key=lambda p: p.name)


def load_target(name_or_path: str | Path, targets_dir: str | Path | None = None) -> TargetProfile:
    """A profile by name (user folders shadow shipped ones) or by the path of a YAML file."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")):
        return load_profile_file(text)
    profiles = resolve_profiles(targets_dir)
    if text in profiles:
        return profiles[text]
    raise EdgekitError(f"--target: no target profile named {text!r} (available: {', '.join(sorted(profiles))})")
