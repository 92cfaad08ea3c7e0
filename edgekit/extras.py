"""Which optional part of edgekit a command needs, and the one line that says how to install it.

``pip install edgekit`` is the light core (ONNX, ONNX Runtime, the TFLite interpreter, numpy):
inspect, quantize with ONNX Runtime, eval, bench here and over SSH, report. PyTorch (3+ GB with
its CUDA libraries) and TensorFlow (1+ GB) come only with the extras that need them.
"""
from __future__ import annotations

import importlib.util

from edgekit.errors import EdgekitError

# extra -> (what it is, the top-level modules it provides)
EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "torch": ("PyTorch", ("torch", "torchvision", "torch_pruning", "onnxscript")),
    "tflite": ("TensorFlow and onnx2tf", ("tensorflow", "onnx2tf", "tf_keras", "onnxsim", "onnx_graphsurgeon",
                                          "sng4onnx")),
    "openvino": ("OpenVINO", ("openvino",)),
}


def extra_providing(module: str | None) -> str | None:
    """The extra whose install provides ``module`` (a dotted name is judged by its top level)."""
    top = (module or "").split(".")[0]
    return next((extra for extra, (_, modules) in EXTRAS.items() if top in modules), None)


def install_hint(extra: str) -> str:
    return f"pip install 'edgekit[{extra}]'"


def missing_message(what: str, extra: str) -> str:
    return f"{what} needs {EXTRAS[extra][0]}, which is not installed: {install_hint(extra)}"


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported: cheap)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(extra: str, what: str) -> None:
    """Fail with one line, before any work, when ``what`` needs an extra that is not installed
    (judged by the extra's first two modules, the ones its commands import first)."""
    if not all(installed(module) for module in EXTRAS[extra][1][:2]):
        raise EdgekitError(missing_message(what, extra))
