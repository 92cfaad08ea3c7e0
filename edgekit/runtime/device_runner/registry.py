"""The one table of runtimes and model formats: adding a runtime is one entry here plus its module.

Everything that asks "which runtime runs this file?", "is it installed?", "what do I tell the user
to install?" reads this table: the runner on a device, ``edgekit bench`` (local and SSH), target
profiles, the report and the manifests. Like the rest of this folder it imports nothing of edgekit,
because the folder is uploaded to boards as-is.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Format:
    """A model file format, by its suffix. ``companions``: files that travel with it (IR weights)."""

    suffix: str
    name: str
    label: str
    companions: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuntimeSpec:
    """What edgekit knows about one runtime. ``module`` is the sibling module with the Runner class
    ``runner``; ``modules`` are the Python packages that provide the runtime, in probe order."""

    name: str
    label: str
    suffixes: tuple[str, ...]
    modules: tuple[str, ...]
    install: str
    module: str
    runner: str
    aliases: tuple[str, ...] = ()
    # opened by edgekit in a child process (runtime/child.py), not in edgekit's own
    in_child: bool = False

    def runs(self, path: str) -> bool:
        return suffix_of(path) in self.suffixes

    def installed(self) -> bool:
        """Whether this Python has one of the providing packages (found, not imported: cheap)."""
        return any(_findable(module) for module in self.modules)

    def available_in(self, versions: dict[str, Any]) -> bool:
        """Whether a probe's ``system.runtimes`` (module -> version) lists a providing package."""
        return any(module in versions for module in self.modules)

    def runner_class(self) -> Any:
        package = __name__.rpartition(".")[0]
        return getattr(importlib.import_module(f"{package}.{self.module}"), self.runner)


FORMATS = (
    Format(".onnx", "onnx", "ONNX"),
    Format(".tflite", "tflite", "TFLite"),
    Format(".xml", "openvino-ir", "OpenVINO IR", companions=(".bin",)),
)

RUNTIMES = (
    RuntimeSpec("onnxruntime", "ONNX Runtime", (".onnx",), ("onnxruntime",), "pip install onnxruntime",
                "ort_runner", "OrtRunner", aliases=("ort", "onnx")),
    RuntimeSpec("tflite", "TFLite", (".tflite",), ("ai_edge_litert", "tflite_runtime", "tensorflow"),
                "pip install ai-edge-litert (or tflite-runtime)", "tflite_runner", "TfliteRunner",
                aliases=("litert", "ai_edge_litert", "tflite_runtime", "tensorflow")),
    # in a child: its TBB pools and JIT kernels beside PyTorch's, TensorFlow's and ORT's in one process
    # once ended a CI run with SIGSEGV (not reproduced here); a child's crash is one line instead
    RuntimeSpec("openvino", "OpenVINO", (".onnx", ".xml"), ("openvino",), "pip install openvino",
                "openvino_runner", "OpenVinoRunner", aliases=("ov",), in_child=True),
)

NAMES = tuple(spec.name for spec in RUNTIMES)
SUFFIXES = tuple(fmt.suffix for fmt in FORMATS)


class RuntimeMissing(ImportError):
    """The runtime is known but not installed for this Python; the message carries the install hint."""


def suffix_of(path: str) -> str:
    name = str(path).lower()
    return "." + name.rsplit(".", 1)[1] if "." in name.rsplit("/", 1)[-1] else ""


def format_of(path: str) -> Format | None:
    return next((fmt for fmt in FORMATS if fmt.suffix == suffix_of(path)), None)


def runtime(name: str) -> RuntimeSpec:
    """The runtime called ``name`` or one of its aliases; ValueError lists the known names."""
    key = name.strip().lower()
    for spec in RUNTIMES:
        if key == spec.name or key in spec.aliases:
            return spec
    raise ValueError(f"unknown runtime {name!r} (known: {', '.join(NAMES)})")


def runtimes_for(path: str) -> list[RuntimeSpec]:
    """Every runtime that runs ``path``, the default (first in the table) first."""
    return [spec for spec in RUNTIMES if spec.runs(path)]


def default_runtime(path: str) -> RuntimeSpec:
    """The runtime a file runs on when nobody asks for one; ValueError for an unknown suffix."""
    found = runtimes_for(path)
    if not found:
        raise ValueError(f"{path}: no runtime runs {suffix_of(path) or 'files without a suffix'} files "
                         f"(known: {', '.join(SUFFIXES)})")
    return found[0]


def choose(path: str, name: str | None = None) -> RuntimeSpec:
    """``name`` (checked to run ``path``), else the default runtime for the file's suffix."""
    if not name:
        return default_runtime(path)
    spec = runtime(name)
    if not spec.runs(path):
        raise ValueError(f"{path}: {spec.name} does not run {suffix_of(path) or 'suffix-less'} files "
                         f"(it runs {', '.join(spec.suffixes)})")
    return spec


def require_installed(spec: RuntimeSpec, python: str) -> None:
    if not spec.installed():
        raise RuntimeMissing(f"{spec.name} is not installed for {python}: {spec.install}")


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
