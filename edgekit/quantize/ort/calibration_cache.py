"""Calibrate once per calibration setting within a search.

A search quantizes the same prepared model many times: the remedies (settings candidates, then 1, 3,
7, ... layers in float), the accuracy budget, ``--auto``. ORT's ``quantize_static`` calibrates from
scratch each time: it writes an augmented model, runs every calibration sample through it and
reduces the outputs (for Entropy, a threshold search per tensor). Which layers stay in float does
not change the ranges, since the calibration runs the float model. So the second quantization with
the same calibration setting reuses the first one's ``TensorsData``. Measured here on the zoo's
EfficientNet-V2-S at 128 px: every layers-in-float candidate after an Entropy choice repeated a
calibration of minutes.

The key holds what ``quantize_static`` hands its calibrator: the calibration method and options,
the op types whose tensors it collects, the weight type (it may update the model's opset), and the
tensors. Each reuse gets a deep copy, because ORT's quantizer adjusts the ranges in place
(``adjust_tensor_ranges``: Relu/Clip inputs, Softmax outputs) depending on which nodes it quantizes.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
from typing import Any, Hashable, Iterator


class _Replay:
    """A calibrator that has already run: ``collect_data`` reads nothing, ``compute_data`` is a copy."""

    def __init__(self, ranges: Any) -> None:
        self.ranges = ranges

    def collect_data(self, reader: Any) -> None:
        pass

    def compute_data(self) -> Any:
        return copy.deepcopy(self.ranges)


class _Recording:
    """ORT's calibrator, keeping a copy of what ``compute_data`` returns under ``key``."""

    def __init__(self, calibrator: Any, store: dict[Hashable, Any], key: Hashable) -> None:
        self.calibrator, self.store, self.key = calibrator, store, key

    def collect_data(self, reader: Any) -> None:
        self.calibrator.collect_data(reader)

    def compute_data(self) -> Any:
        ranges = self.calibrator.compute_data()
        self.store[self.key] = copy.deepcopy(ranges)
        return ranges


class CalibrationCache:
    """Ranges per calibration key, for the quantizations of one prepared model."""

    def __init__(self) -> None:
        self._ranges: dict[Hashable, Any] = {}
        self.hits = 0

    @contextlib.contextmanager
    def serving(self, key: Hashable) -> Iterator[None]:
        """Within the block, ``quantize_static`` calibrates under ``key`` once and replays it after."""
        ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the package's ``quantize`` is a function
        original = ort_quantize.create_calibrator

        def create_calibrator(*args: Any, **kwargs: Any) -> Any:
            if key in self._ranges:
                self.hits += 1
                return _Replay(self._ranges[key])
            return _Recording(original(*args, **kwargs), self._ranges, key)

        ort_quantize.create_calibrator = create_calibrator
        try:
            yield
        finally:
            ort_quantize.create_calibrator = original
