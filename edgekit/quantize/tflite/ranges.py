"""Activation ranges of a TFLite full-integer model: the converter's absolute min/max, or their mean over samples.

TFLite's calibrator logs each tensor's absolute min and max over all calibration samples
(``calibration_logger.cc``), so the one image with the largest activation sets a tensor's whole
range and every other image is rounded on a coarser grid. The mean over samples of each sample's
min and max (NNCF's "mean" MinMax estimator, ORT's moving-average MinMax: edgekit's ORT remedy
"mean min/max ranges") clips those rare extremes instead. Measured at 128x128 (random weights,
BatchNorm statistics set on images, 32 held-out images): EfficientNet-B0's output cosine to FP32
0.696 -> 0.916, MobileNet-V3-Large 0.860 -> 0.947; the 90th percentile of the per-sample extremes
did worse (0.820, 0.926). Top-1 agreement did not suffer (128 other images: 10.9% -> 12.5%, 33.6% -> 44.5%:
random-weight logits are close, hence the low figures). A third kind keeps a normalization's
variance at its absolute range and takes the mean elsewhere (:func:`variance_tensors`).

The converter has one seam between calibrating and quantizing: ``Calibrator.calibrate`` returns the
float model with each tensor's min/max in its quantization parameters, which the MLIR quantizer
then reads. :func:`ranges_during` wraps that method for one conversion and rewrites the numbers.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

MINMAX = "minmax"
MEAN = "mean"
MEAN_ABSOLUTE_VARIANCE = "mean-absolute-variance"
KINDS = (MINMAX, MEAN, MEAN_ABSOLUTE_VARIANCE)
LABELS = {MINMAX: "absolute min/max ranges", MEAN: "mean min/max ranges",
          MEAN_ABSOLUTE_VARIANCE: "mean min/max ranges, absolute for normalization variances"}


def _ranged_tensors(model: Any) -> list[int]:
    """Indices of the tensors the calibrator gave one (per-tensor) min/max: the activations, outputs
    included (keeping the outputs' absolute ranges lowered EfficientNet-B0's cosine 0.916 -> 0.844)."""
    return [index for index, tensor in enumerate(model.subgraphs[0].tensors)
            if tensor.quantization is not None and tensor.quantization.min is not None
            and len(tensor.quantization.min) == 1]


def per_sample_extremes(calibrated: bytes, samples_nhwc: np.ndarray, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) of each tensor in ``indices`` on each sample, shaped (samples, tensors): the float
    model run one sample at a time with every intermediate kept (no delegate folds them away)."""
    from edgekit.quantize.tflite.interpreter import builtin_interpreter

    interpreter = builtin_interpreter(calibrated, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    feed = interpreter.get_input_details()[0]["index"]
    low = np.zeros((len(samples_nhwc), len(indices)))
    high = np.zeros_like(low)
    for row, sample in enumerate(samples_nhwc):
        interpreter.set_tensor(feed, sample[None].astype(np.float32))
        interpreter.invoke()
        for column, index in enumerate(indices):
            values = interpreter.get_tensor(index)
            low[row, column], high[row, column] = values.min(), values.max()
    return low, high


def variance_tensors(model: Any) -> set[int]:
    """The tensors of each normalization's variance: squared deviations (SQUARED_DIFFERENCE, or a MUL of
    a tensor by itself) and the MEAN/SUM/ADD (epsilon) chain that reduces them. Why they may need their
    absolute ranges: a variance range clipped to the mean over samples caps the variance of an outlier
    token (ViT's class token), whose whole normalized vector is then scaled up, an error of every element
    and not of the clipped ones only. ViT-B/32 at 128 px (random weights): SQUARED_DIFFERENCE's mean range
    25.4 against 43.9 absolute, an outlier token's variance 2.3 against 4.0. On 32 held-out images, absolute
    ranges gave cosine 0.8825 and top-1 agreement 46.9%; mean ranges 0.9325 but 21.9% (a drop beyond
    sampling noise: rejected); mean ranges with this chain absolute 0.9317 and 34.4% (kept). It is not
    always better: where the wide samples are rare the absolute range's coarser grid costs more (a
    LayerNorm whose one token's spread is log-normal across samples: 0.969 with mean ranges everywhere,
    0.941 with this chain absolute), so it is a third candidate the remedy measures."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgekit.quantize.tflite.flatbuffer_ops import builtin_code

    ops = schema.BuiltinOperator
    subgraph = model.subgraphs[0]
    chain = {out for op in subgraph.operators for out in op.outputs
             if builtin_code(model, op) == ops.SQUARED_DIFFERENCE
             or (builtin_code(model, op) == ops.MUL and op.inputs[0] == op.inputs[1])}
    grew = True
    while grew:  # one step of the chain per pass: the reductions, then the epsilon's ADD
        grew = False
        for op in subgraph.operators:
            reduces = builtin_code(model, op) in (ops.MEAN, ops.SUM, ops.ADD) and op.inputs[0] in chain
            if reduces and not set(op.outputs) <= chain:
                chain.update(op.outputs)
                grew = True
    return chain


def set_mean_ranges(model: Any, calibrated: bytes, samples_nhwc: np.ndarray, absolute_variance: bool = False) -> None:
    """In ``model`` (``calibrated``, the calibrator's float model, unpacked), each activation's range
    made the mean over ``samples_nhwc`` of its per-sample min and max (widened to hold 0, as the quantizer
    needs); with ``absolute_variance``, a normalization's variance (:func:`variance_tensors`) keeps the
    absolute range."""
    absolute = variance_tensors(model) if absolute_variance else set()
    indices = [index for index in _ranged_tensors(model) if index not in absolute]
    low, high = per_sample_extremes(calibrated, samples_nhwc, indices)
    tensors = model.subgraphs[0].tensors
    for column, index in enumerate(indices):
        tensors[index].quantization.min = [float(min(low[:, column].mean(), 0.0))]
        tensors[index].quantization.max = [float(max(high[:, column].mean(), 0.0))]


def adjusted_ranges(calibrated: bytes, kind: str, samples_nhwc: np.ndarray | None) -> bytes:
    """``calibrated`` with ``kind`` ranges (``minmax``: the converter's, kept), then each BATCH_MATMUL's
    right operand made symmetric (:mod:`matmul_operands`); the model is unpacked once for both, and
    not at all where neither applies (unpacking costs seconds and its size again in memory)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgekit.quantize.tflite.matmul_operands import has_batch_matmul, make_right_operands_symmetric

    averaged = kind != MINMAX and samples_nhwc is not None
    matmuls = has_batch_matmul(calibrated)
    if not averaged and not matmuls:
        return calibrated
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    if averaged:
        set_mean_ranges(model, bytes(calibrated), samples_nhwc, absolute_variance=kind == MEAN_ABSOLUTE_VARIANCE)
    changed = make_right_operands_symmetric(model) if matmuls else False
    if not averaged and not changed:
        return calibrated
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@contextlib.contextmanager
def ranges_during(kind: str, samples_nhwc: np.ndarray | None) -> Iterator[None]:
    """Within the block, a TFLite conversion quantizes with ``kind`` ranges (``minmax``: the converter's),
    each BATCH_MATMUL's right operand then made symmetric (:func:`adjusted_ranges`)."""
    if kind not in KINDS:
        raise ValueError(f"ranges: {kind!r} is not one of {', '.join(KINDS)}")
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def calibrate(self: Any, dataset_gen: Any) -> bytes:
        return adjusted_ranges(original(self, dataset_gen), kind, samples_nhwc)

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


def has_normalization_variance(flatbuffer: bytes) -> bool:
    """Whether a TFLite model computes a normalization's variance (:func:`variance_tensors`): where the
    third range candidate can differ from the second."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bool(variance_tensors(flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))))
