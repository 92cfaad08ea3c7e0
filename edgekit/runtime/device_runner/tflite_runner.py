"""The TFLite interpreter: ai_edge_litert, tflite_runtime or tensorflow, whichever is installed."""
from __future__ import annotations

import sys
from typing import Any, Sequence

import numpy as np

from .base import Runner, TensorInfo
from .registry import runtime

DELEGATES = ("xnnpack", "none")


def load_tflite_interpreter_class() -> tuple[Any, str, str]:
    """The first TFLite interpreter available, in the registry's probe order."""
    for module in runtime("tflite").modules:
        try:
            if module == "tensorflow":
                import tensorflow as tf  # type: ignore

                return tf.lite.Interpreter, "tensorflow", tf.__version__
            package = __import__(f"{module}.interpreter", fromlist=["Interpreter"])
            return package.Interpreter, module, getattr(sys.modules[module], "__version__", "?")
        except ImportError:
            continue
    raise ImportError(f"no TFLite interpreter: {runtime('tflite').install} on this machine")


class TfliteRunner(Runner):
    backend = "tflite"

    def __init__(self, path: str, threads: int | None = None, layout: str | None = None, delegate: str | None = None):
        """``delegate`` "none": the plain builtin kernels, without the XNNPACK delegate the
        interpreter applies by default (what a profile's ``tflite.delegate: none`` asks for)."""
        interpreter_class, self.package, self.version = load_tflite_interpreter_class()
        if delegate not in (None, *DELEGATES):
            raise ValueError(f"unknown TFLite delegate {delegate!r} (known: {', '.join(DELEGATES)})")
        options: dict[str, Any] = {}
        if delegate == "none":
            resolver = sys.modules[interpreter_class.__module__].OpResolverType
            options["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.delegate = delegate or "xnnpack"
        self.interpreter = interpreter_class(model_path=path, num_threads=threads or None, **options)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()
        self._out = in_onnx_order(self.interpreter, self.interpreter.get_output_details())
        inputs = [_tflite_info(d) for d in self._in]
        outputs = [_tflite_info(d) for d in self._out]
        super().__init__(path, inputs, outputs)
        self.layout = layout or _guess_layout(inputs[0].shape)

    def profile(self, feeds: list[np.ndarray], runs: int, top: int) -> dict[str, Any]:
        """None of the Python interpreters (ai_edge_litert 2.1, tflite_runtime, tf.lite) exposes
        TFLite's op profiler: it is reachable only from C++ and the benchmark_model tool."""
        from .op_profile import not_available

        return not_available(f"{self.package} {self.version}: the TFLite Python interpreter exposes no per-operator "
                             "timing (use TFLite's benchmark_model --enable_op_profiling on the device)")

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        for detail, value in zip(self._in, feeds):
            if list(value.shape) != list(detail["shape"]):
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(detail["index"], value)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self._out]


def in_onnx_order(interpreter: Any, details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The output details in the ONNX model's order: TFLite lists outputs in its own order (measured:
    a [1,5], [1,32,32,8], [1,8,1024] model came back as the second, first, third), but the
    signature edgekit's converter writes keeps the Keras model's order, which onnx2tf takes from the
    ONNX graph, as ``output_0``, ``output_1``, ... A file without such a signature keeps TFLite's order."""
    if len(details) < 2:
        return details
    try:
        signatures = interpreter._get_full_signature_list() or {}
    except Exception:  # an interpreter without signature support: TFLite's order
        return details
    for signature in signatures.values():
        named = signature.get("outputs", {})
        if len(named) == len(details) and all(_position(k) is not None for k in named):
            by_index = {d["index"]: d for d in details}
            ordered = [by_index.get(named[k]) for k in sorted(named, key=_position)]
            if all(d is not None for d in ordered):
                return ordered
    return details


def _position(key: str) -> int | None:
    head, _, tail = key.rpartition("_")
    return int(tail) if head == "output" and tail.isdigit() else None


def _tflite_info(detail: dict[str, Any]) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(detail["name"], [int(d) for d in detail["shape"]], detail["dtype"], scale, zero_point)


def _guess_layout(shape: Sequence[Any]) -> str:
    """onnx2tf turns NCHW image inputs into NHWC; a 4-D input with 1 or 3 channels last is NHWC."""
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return "NHWC"
    return "NCHW"
