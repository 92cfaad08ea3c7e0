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
from edgekit.memory import release_freed_memory
from edgekit.quantize.head import fixed_projection, walk_tail
from edgekit.quantize.tflite.interpreter import builtin_interpreter
from edgekit.quantize.tflite.keras_build import quiet_tensorflow
from edgekit.quantize.tflite.ranges import MINMAX, Calibrated
from edgekit.worker import raise_if_swallowed


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
    quantization, the rest INT8; the output then stays float32. ``ranges``: see :mod:`ranges`."""
    if calib_nhwc is not None:
        calibrated = calibrate(model, calib_nhwc, allow_float=float_fallback or bool(float_tensors), progress=progress)
        return quantize_calibrated(calibrated, float_io=float_io, per_channel=per_channel, float_tensors=float_tensors,
                                   ranges=ranges, float_fallback=float_fallback)
    converter = _converter(model)
    if weights is not None:
        import tensorflow as tf

        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative dataset: dynamic range
        if weights == "fp16":
            converter.target_spec.supported_types = [tf.float16]
    with quiet_tensorflow():
        try:
            return _convert_then_deduplicate(converter)
        except Exception as exc:
            kind = {"dynamic": "dynamic-range INT8", "fp16": "float16"}.get(weights or "", "FP32")
            raise EdgekitError(f"TFLite {kind} conversion failed ({_op_problem(first_line(exc))})") from exc


def _convert_then_deduplicate(converter: Any) -> bytes:
    """``converter.convert()``, its last two steps (the read-only buffer deduplication, then the
    conversion metadata) run once it has returned: the same bytes, but the frozen graph it holds until
    then (two copies of the weights, as constants) is freed first. Why: the deduplication repacks the
    whole model, and on top of those copies it was the peak of a whole TFLite stage (ViT-L/32 at 128 px,
    1.2 GB: 20.2 GB)."""
    from tensorflow.lite.python import convert

    converter.exclude_conversion_metadata = True
    undeduplicated = _convert_undeduplicated(converter)
    return _with_conversion_metadata(convert.deduplicate_readonly_buffers(undeduplicated), converter._metadata)


def _convert_undeduplicated(converter: Any) -> bytes:
    """``converter.convert()`` without its read-only buffer deduplication (its last step but the
    metadata), and the memory its frozen graph held given back: the caller deduplicates."""
    from tensorflow.lite.python import lite

    deduplicate = lite._deduplicate_readonly_buffers
    lite._deduplicate_readonly_buffers = lambda model: model
    try:
        converted = converter.convert()
    finally:
        lite._deduplicate_readonly_buffers = deduplicate
    raise_if_swallowed()  # TensorFlow's native code may have turned a Ctrl-C into its own error
    release_freed_memory()
    return converted


def _full_integer_error(exc: Exception, allow_float: bool) -> EdgekitError:
    """The converter's failure as one line naming the op, with the way out where there is one."""
    hint = "" if allow_float else "; --float-fallback keeps ops that have no integer kernel in float"
    return EdgekitError(f"TFLite full-integer INT8 conversion failed ({_op_problem(first_line(exc))}){hint}")


def _converter(model: Any) -> Any:
    release_freed_memory()  # a conversion's peak is 15-30x the model: not on top of the last step's leftovers
    with quiet_tensorflow():
        import tensorflow as tf

        function, holder = _concrete_function(model)
        return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)


def calibrate(model: Any, calib_nhwc: np.ndarray, *, allow_float: bool = False, progress: bool = True) -> Calibrated:
    """The Keras model converted to TFLite and calibrated on ``calib_nhwc`` (each activation's absolute
    min/max), not yet quantized: what the converter quantizes, kept so that every INT8 candidate (other
    ranges, ops kept in float) is one quantization of it, not a whole conversion and calibration again
    (ConvNeXt-S at 128 px: 45-55 s each). ``allow_float``: ops with no integer kernel are allowed, to be
    left in float by the quantizer; without it the conversion refuses them, as a full-integer one must."""
    import tensorflow as tf
    from tensorflow.lite.python import convert
    from tensorflow.lite.python.optimize import calibrator as _calibrator

    from edgekit.log import progress as progress_bar

    def representative() -> Iterator[list[np.ndarray]]:
        for sample in progress_bar(calib_nhwc, desc="calibrating (TFLite)", unit="img",
                                   disable=None if progress else True):
            yield [sample[None].astype(np.float32)]

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
        [tf.lite.OpsSet.TFLITE_BUILTINS] if allow_float else [])
    converter._experimental_calibrate_only = True  # what TFLite's QuantizationDebugger does
    converter.exclude_conversion_metadata = True  # the quantized model's own is added (_with_conversion_metadata)
    # the calibration and the deduplication after it run once convert() has returned, as they would have in
    # it (TFLiteConverter._quantize in calibrate-only mode): the same bytes, without the converter's frozen
    # graph alive under them (ViT-L/32 at 128 px: the calibration was then the TFLite stage's peak)
    converter._quantize = lambda converted, *_: converted
    with quiet_tensorflow():
        try:
            converted = _convert_undeduplicated(converter)
            with_intermediates = _calibrator.add_intermediate_tensors(converted)
            del converted
            calibrated = _calibrator.Calibrator(with_intermediates, [], []).calibrate(representative)
            del with_intermediates
            return Calibrated(convert.deduplicate_readonly_buffers(calibrated), calib_nhwc,
                              conversion_metadata=converter._metadata)
        except Exception as exc:
            raise _full_integer_error(exc, allow_float) from exc


def quantize_calibrated(calibrated: Calibrated, *, float_io: bool = False, per_channel: bool = True,
                        float_tensors: Sequence[str] = (), ranges: str = MINMAX, float_fallback: bool = False) -> bytes:
    """``calibrated`` with ``ranges`` quantized as the converter would have (``mlir_quantize`` with its
    arguments, then its read-only buffer deduplication): int8 I/O unless ``float_io``; with
    ``float_tensors``, those ops kept in float (TFLite's selective quantization, as its
    QuantizationDebugger calls it: float I/O)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    release_freed_memory()
    adjusted = calibrated.with_ranges(ranges)
    with quiet_tensorflow():
        try:
            if float_tensors:
                quantized = convert.mlir_quantize(adjusted, disable_per_channel=not per_channel, fully_quantize=False,
                                                  enable_numeric_verify=False, denylisted_nodes=list(float_tensors))
            else:
                io_type = tf.float32 if float_io else tf.int8
                quantized = convert.deduplicate_readonly_buffers(convert.mlir_quantize(
                    adjusted, not per_channel, input_data_type=io_type, output_data_type=io_type))
            return _with_conversion_metadata(quantized, calibrated.conversion_metadata)
        except Exception as exc:
            if float_tensors:
                raise EdgekitError(f"TFLite INT8 with {len(float_tensors)} op(s) in float failed "
                                   f"({_op_problem(first_line(exc))})") from exc
            raise _full_integer_error(exc, float_fallback) from exc


def _with_conversion_metadata(flatbuffer: bytes, metadata: Any) -> bytes:
    """``flatbuffer`` with the converter's CONVERSION_METADATA (its TensorFlow version, options and this
    model's hash) as ``TFLiteConverter.convert`` adds it last: the same bytes as a one-call conversion."""
    import copy

    from tensorflow.lite.python import lite
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    metadata = copy.deepcopy(metadata)  # one per candidate quantized from the same calibration
    metadata.options.modelOptimizationModes.extend(lite._get_sparsity_modes(model))
    metadata.environment.modelHash = lite._get_model_hash(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(lite._populate_conversion_metadata(model, metadata)))


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
