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

The converter calibrates (``Calibrator.calibrate``: the float model with each tensor's min/max in its
quantization parameters) and then quantizes that calibrated model (``mlir_quantize``). edgekit keeps
the calibrated model (:class:`Calibrated`) and rewrites its numbers for each candidate before
quantizing it, so that candidates differ in their ranges only, and none converts or calibrates again.
"""
from __future__ import annotations

from typing import Any

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


class Calibrated:
    """The calibrator's float model (each activation's absolute min/max over ``samples_nhwc`` in its
    quantization parameters) and those samples: every INT8 candidate is quantized from one of these."""

    def __init__(self, flatbuffer: bytes, samples_nhwc: np.ndarray, conversion_metadata: Any) -> None:
        self.flatbuffer = flatbuffer
        self.samples_nhwc = samples_nhwc
        self.conversion_metadata = conversion_metadata  # the converter's, for the quantized models (convert.py)
        self._means: dict[int, tuple[float, float]] | None = None

    def _per_sample_means(self, model: Any) -> dict[int, tuple[float, float]]:
        """Each ranged tensor of ``model`` (this calibrated model, unpacked) with the mean over the samples
        of its per-sample (min, max): measured on the first candidate that needs them, kept for the next."""
        if self._means is None:
            indices = _ranged_tensors(model)
            low, high = per_sample_extremes(self.flatbuffer, self.samples_nhwc, indices)
            self._means = {index: (float(low[:, column].mean()), float(high[:, column].mean()))
                           for column, index in enumerate(indices)}
        return self._means

    def with_ranges(self, kind: str) -> bytes:
        """The calibrated model with ``kind`` ranges (``minmax``: the calibrator's, kept), then each
        BATCH_MATMUL's right operand made symmetric (:mod:`matmul_operands`); unpacked once for both,
        and not at all where neither applies (unpacking costs seconds and its size again in memory)."""
        if kind not in KINDS:
            raise ValueError(f"ranges: {kind!r} is not one of {', '.join(KINDS)}")
        from tensorflow.lite.tools import flatbuffer_utils

        from edgekit.quantize.tflite.matmul_operands import has_batch_matmul, make_right_operands_symmetric

        averaged = kind != MINMAX
        matmuls = has_batch_matmul(self.flatbuffer)
        if not averaged and not matmuls:
            return self.flatbuffer
        model = flatbuffer_utils.convert_bytearray_to_object(bytearray(self.flatbuffer))
        if averaged:
            self._set_mean_ranges(model, absolute_variance=kind == MEAN_ABSOLUTE_VARIANCE)
        changed = make_right_operands_symmetric(model) if matmuls else False
        if not averaged and not changed:
            return self.flatbuffer
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

    def _set_mean_ranges(self, model: Any, absolute_variance: bool) -> None:
        """In ``model`` (this calibrated model, unpacked), each activation's range the mean over the samples
        of its per-sample min and max (widened to hold 0, as the quantizer needs); with
        ``absolute_variance``, a normalization's variance (:func:`variance_tensors`) keeps the absolute range."""
        absolute = variance_tensors(model) if absolute_variance else set()
        tensors = model.subgraphs[0].tensors
        for index, (low, high) in self._per_sample_means(model).items():
            if index not in absolute:
                # float32 now, as the flatbuffer stores them, so what is derived from them next is too
                tensors[index].quantization.min = [float(np.float32(min(low, 0.0)))]
                tensors[index].quantization.max = [float(np.float32(max(high, 0.0)))]


def has_normalization_variance(flatbuffer: bytes) -> bool:
    """Whether a TFLite model computes a normalization's variance (:func:`variance_tensors`): where the
    third range candidate can differ from the second."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bool(variance_tensors(flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))))
