"""The runtime registry as edgekit's host side asks it: the table lives in the self-contained
:mod:`edgekit.runtime.device_runner.registry` (devices read it too); this module turns its
ValueErrors into one-line :class:`EdgekitError` s and adds the labels reports print."""
from __future__ import annotations

import os
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.runtime.device_runner.registry import (FORMATS, NAMES, RUNTIMES, SUFFIXES, Format, RuntimeSpec,
                                                    choose, format_of, runtime, runtimes_for)

__all__ = ["FORMATS", "NAMES", "RUNTIMES", "SUFFIXES", "Format", "RuntimeSpec", "format_label", "format_of", "model_format",
           "runtime_for", "runtime_label", "runtime_named", "runtimes_for", "suffix_list"]


def suffix_list() -> str:
    """``.onnx, .tflite or .xml``: for messages that say what a model file may be."""
    return ", ".join(SUFFIXES[:-1]) + f" or {SUFFIXES[-1]}"


def runtime_named(name: str, what: str = "--runtime") -> RuntimeSpec:
    """The runtime called ``name`` (or an alias); an unknown name is an error naming ``what``."""
    try:
        return runtime(name)
    except ValueError as exc:
        raise EdgekitError(f"{what}: {exc}") from exc


def runtime_for(path: str | os.PathLike[str], name: str | None = None) -> RuntimeSpec:
    """The runtime that runs ``path``: ``name`` when given (it must run that suffix), else the default."""
    try:
        return choose(str(path), name)
    except ValueError as exc:
        raise EdgekitError(str(exc)) from exc


def model_format(path: str | os.PathLike[str]) -> Format:
    """The model format of ``path`` by its suffix; any other suffix is an error naming the file."""
    found = format_of(str(path))
    if found is None:
        raise EdgekitError(f"{path}: not a model file edgekit runs ({Path(path).suffix.lower() or 'no suffix'}; "
                           f"known: {', '.join(SUFFIXES)})")
    return found


def format_label(artifact: str) -> str:
    """``ONNX``, ``TFLite``, ``OpenVINO IR``; the bare suffix for a file no runtime runs."""
    found = format_of(artifact)
    return found.label if found else Path(artifact).suffix.lstrip(".") or "?"


def runtime_label(name: str | None) -> str:
    """``ONNX Runtime`` for ``onnxruntime``; an older or unknown name is shown as written."""
    if not name:
        return ""
    try:
        return runtime(name).label
    except ValueError:
        return name
