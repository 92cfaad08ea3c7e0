"""Keras model -> ``.tflite`` (FP32, full-integer INT8 with a representative dataset, or, with no
data, dynamic-range INT8 or float16 weights).

Why not ``TFLiteConverter.from_keras_model``: it saves the model as a SavedModel with the Keras
object as trackable root, and serialising tf_keras metadata took ~50 s per conversion for
ResNet-18 here. Converting a concrete function whose only trackable root is a plain ``tf.Module``
holding the weights produces the same graph in 2-4 s (outputs identical on the same inputs).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.quantize.head import fixed_projection, walk_tail
from edgekit.quantize.tflite.interpreter import builtin_interpreter
from edgekit.quantize.tflite.keras_build import quiet_tensorflow
from edgekit.quantize.tflite.ranges import MINMAX, ranges_during


def _concrete_function(model: Any) -> tuple[Any, Any]:
    import tensorflow as tf

    holder = tf.Module()
    holder.weights_ = list(model.weights)  # tracked, so the SavedModel export finds every variable
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    if len(specs) == 1:
        holder.serve = tf.function(lambda x: model(x), input_signature=specs)
    else:
        holder.serve = tf.function(lambda *xs: model(list(xs)), input_signature=specs)
    return holder.serve.get_concrete_function(), holder


def to_tflite(
    model: Any,
    calib_nhwc: np.ndarray | None = None,
    *,
    float_io: bool = False,
    per_channel: bool = True,
    float_fallback: bool = False,
    progress: bool = True,
    weights: str | None = None,
    float_tensors: Sequence[str] = (),
    ranges: str = MINMAX,
) -> bytes:
    """FP32 flatbuffer when ``calib_nhwc`` is None, else full-integer INT8 (int8 I/O unless float_io).
    ``float_fallback``: ops with no integer kernel stay float instead of failing the conversion.
    ``weights`` (without ``calib_nhwc``): ``dynamic`` = dynamic-range INT8 (int8 weights, activations
    quantized at run time), ``fp16`` = float16 weights; float32 I/O in both. ``float_tensors``: ops
    (by output tensor name, see :func:`output_tail_tensors`) kept in float by TFLite's selective
    quantization, the rest INT8; the output then stays float32."""
    from edgekit.log import progress as progress_bar

    with quiet_tensorflow():
        import tensorflow as tf

        function, holder = _concrete_function(model)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], holder)
    if calib_nhwc is None and weights is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative dataset: dynamic range
        if weights == "fp16":
            converter.target_spec.supported_types = [tf.float16]
    if calib_nhwc is not None:
        def representative() -> Iterator[list[np.ndarray]]:
            for sample in progress_bar(calib_nhwc, desc="calibrating (TFLite)", unit="img",
                                       disable=None if progress else True):
                yield [sample[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else [])
        converter._experimental_disable_per_channel = not per_channel
        if not float_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    if calib_nhwc is not None and float_tensors:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.inference_output_type = tf.float32
        with quiet_tensorflow(), ranges_during(ranges, calib_nhwc):
            try:
                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_tensors))
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=representative, debug_options=options)
                return debugger.get_nondebug_quantized_model()
            except Exception as exc:
                raise EdgekitError(f"TFLite INT8 with {len(float_tensors)} op(s) in float failed "
                                   f"({_op_problem(first_line(exc))})") from exc
    with quiet_tensorflow(), ranges_during(ranges, calib_nhwc):
        try:
            return converter.convert()
        except Exception as exc:
            kind = "full-integer INT8" if calib_nhwc is not None else {"dynamic": "dynamic-range INT8",
                                                                        "fp16": "float16"}.get(weights or "", "FP32")
            hint = ("; --float-fallback keeps ops that have no integer kernel in float"
                    if calib_nhwc is not None and not float_fallback else "")
            raise EdgekitError(f"TFLite {kind} conversion failed ({_op_problem(first_line(exc))}){hint}") from exc


WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV"}


def output_tail_tensors(float_model: bytes) -> list[str]:
    """Output tensor names of the ops that reach a model output without passing a weighted op, in
    a float flatbuffer of the same Keras graph: the TFLite twin of :func:`edgekit.quantize.head.output_tail`."""
    interpreter = builtin_interpreter(float_model)
    ops = interpreter._get_ops_details()
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    producer = {out: op for op in ops for out in op["outputs"]}

    def weighted(op: dict[str, Any]) -> bool:
        if op["op_name"] not in WEIGHTED_OPS:
            return False
        return not (op["op_name"] == "CONV_2D" and fixed_projection(_constant(interpreter, op["inputs"][1])))

    tail = walk_tail((producer[d["index"]] for d in interpreter.get_output_details() if d["index"] in producer),
                     lambda op: [producer[i] for i in op["inputs"] if i in producer], weighted, lambda op: op["index"])
    return [names[out] for index in sorted(tail) for out in tail[index]["outputs"]]


# ops whose INT8 output is their input's values rearranged, or a max/clamp of them: no rounding of their own
REARRANGING_OPS = {"RESHAPE", "TRANSPOSE", "GATHER", "CONCATENATION", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE",
                   "SLICE", "PACK", "UNPACK", "SPLIT", "SPLIT_V", "PAD", "PADV2", "MAX_POOL_2D", "RELU", "RELU6",
                   "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "TILE", "BROADCAST_TO", "QUANTIZE", "DEQUANTIZE"}


def non_compute_tensors(float_model: bytes) -> list[str]:
    """Output tensor names of every op that is neither weighted (Conv, FullyConnected, BatchMatMul) nor
    a rearrangement, in a float flatbuffer of the Keras graph: what NNCF's scope (and edgekit's ORT
    remedy "Conv/MatMul/Gemm only in INT8") leaves in float: LayerNorm's parts, residual Adds,
    Softmax, GELU, SE gates."""
    interpreter = builtin_interpreter(float_model)
    names = {t["index"]: t["name"] for t in interpreter.get_tensor_details()}
    return [names[out] for op in interpreter._get_ops_details()
            if op["op_name"] not in WEIGHTED_OPS | REARRANGING_OPS for out in op["outputs"]]


def _constant(interpreter: Any, index: int) -> Any:
    """A constant tensor's value (a filter), or None where the interpreter holds no data for it."""
    try:
        return interpreter.get_tensor(index)
    except ValueError:
        return None


def _op_problem(message: str) -> str:
    """The converter's MLIR error, from its ``'tf.Erf' op is neither a custom op nor a flex op`` part
    when there is one (the rest is a path into edgekit's own source)."""
    import re

    found = re.search(r"'([\w.]+)' op (is neither a custom op nor a flex op|.*?)(?:$|\n)", message)
    return f"{found.group(1)}: {found.group(2)}" if found else message
