"""What every runtime shares: tensor descriptions, and float-NCHW in / float out around ``run``.

Conventions: callers hand ``predict`` float32 tensors in NCHW (PyTorch's layout, what the
calibration recipes produce). The runner transposes to NHWC for models whose input is NHWC
(onnx2tf output) and quantizes/dequantizes integer inputs and outputs with the model's own
scale and zero point. A runtime subclasses :class:`Runner` and implements ``__init__`` and ``run``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class TensorInfo:
    """Name, shape, dtype and (for integer tensors) the affine quantization of one model tensor."""

    def __init__(self, name: str, shape: Sequence[Any], dtype: Any, scale: float = 0.0, zero_point: int = 0):
        self.name = name
        self.shape = [d if isinstance(d, int) and d > 0 else None for d in shape]
        self.dtype = np.dtype(dtype)
        self.scale = float(scale)
        self.zero_point = int(zero_point)

    @property
    def quantized(self) -> bool:
        return self.dtype.kind in "iu" and self.scale > 0

    def as_dict(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "shape": self.shape, "dtype": self.dtype.name}
        if self.quantized:
            info["quantization"] = {"scale": self.scale, "zero_point": self.zero_point}
        return info


def fill_dynamic(info: TensorInfo, shape: Sequence[int] | None) -> list[int]:
    """``info``'s shape with its dynamic dimensions taken from ``shape`` (a dynamic batch: 1). A static
    input ignores ``shape``: one shape serves a run of a dynamic ONNX model and its static TFLite twin."""
    if shape is not None and None in info.shape:
        if len(shape) != len(info.shape) or any(d is not None and d != int(s) for d, s in zip(info.shape, shape)):
            raise ValueError(f"--input-shape {','.join(map(str, shape))} does not fit input {info.name!r} of shape "
                             f"{_dims(info.shape)}")
        return [int(s) for s in shape]
    if any(d is None for d in info.shape[1:]):
        raise ValueError(f"input {info.name!r} has dynamic dimensions {_dims(info.shape)}: give the size to time it "
                         "at (--input-shape, e.g. 1,3,640,640), or export the model at a fixed size")
    return [d or 1 for d in info.shape]


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class Runner:
    """One loaded model. ``run`` takes native tensors; ``predict`` takes float NCHW batches.
    ``backend`` is the registry name; ``package``/``version`` say which package ran it."""

    backend = "base"
    package = "?"
    version = "?"

    def __init__(self, path: str, inputs: list[TensorInfo], outputs: list[TensorInfo]):
        self.path = path
        self.inputs = inputs
        self.outputs = outputs
        self.layout = "NCHW"

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def profile(self, feeds: list[np.ndarray], runs: int, top: int) -> dict[str, Any]:
        """Per-operator time over ``runs`` profiled inferences (see op_profile.py); a runtime with a
        profiler overrides this, the others say they have none."""
        from .op_profile import not_available

        return not_available(f"{self.backend} exposes no per-operator timing")

    # -- conversions -------------------------------------------------------------------------
    def to_native(self, x: np.ndarray, info: TensorInfo) -> np.ndarray:
        """Float NCHW -> the model's layout and dtype."""
        x = np.asarray(x, dtype=np.float32)
        if self.layout == "NHWC" and x.ndim == 4:
            x = x.transpose(0, 2, 3, 1)
        if info.quantized:
            limits = np.iinfo(info.dtype)
            q = np.round(x / info.scale) + info.zero_point
            return np.clip(q, limits.min, limits.max).astype(info.dtype)
        return np.ascontiguousarray(x.astype(info.dtype))

    @staticmethod
    def to_float(y: np.ndarray, info: TensorInfo) -> np.ndarray:
        if info.quantized:
            return (y.astype(np.float32) - info.zero_point) * info.scale
        return y.astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float NCHW batch -> float first output, one row per sample (loops batch-1 models)."""
        return self._predict(x, 1)[0]

    def predict_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Float NCHW batch -> every output as float, in the ONNX model's order and NCHW layout (a
        runtime whose outputs come in another order puts ``self.outputs`` in ONNX order)."""
        return self._predict(x, len(self.outputs))

    def _predict(self, x: np.ndarray, count: int) -> list[np.ndarray]:
        info = self.inputs[0]
        fixed_batch = info.shape[0] if info.shape else None
        if fixed_batch is None or fixed_batch == len(x):
            raw = self.run([self.to_native(x, info)])
            return [self.to_nchw(self.to_float(raw[k], self.outputs[k])) for k in range(count)]
        rows = [self.run([self.to_native(x[i:i + 1], info)]) for i in range(len(x))]
        return [self.to_nchw(np.concatenate([self.to_float(r[k], self.outputs[k]) for r in rows], axis=0))
                for k in range(count)]

    def to_nchw(self, y: np.ndarray) -> np.ndarray:
        """A 4-D output of an NHWC model (onnx2tf's TFLite: a segmenter's masks) in the ONNX model's
        NCHW layout, so every runtime's outputs are scored and compared alike."""
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if self.layout == "NHWC" and y.ndim == 4 else y

    def example_feeds(self, seed: int = 0, shape: Sequence[int] | None = None) -> list[np.ndarray]:
        """Random native inputs of the model's own shape; ``shape`` sizes the first input where the model
        leaves a dimension dynamic (in that model's layout). A dynamic batch is taken as 1; a dynamic height
        or width with no ``shape`` is a ValueError: timed at 1x1, a model measures nothing real."""
        rng = np.random.default_rng(seed)
        feeds = []
        for index, info in enumerate(self.inputs):
            dims = fill_dynamic(info, shape if index == 0 else None)
            if info.dtype.kind in "iu":
                limits = np.iinfo(info.dtype)
                feeds.append(rng.integers(limits.min, limits.max + 1, size=dims, dtype=info.dtype))
            else:
                feeds.append(rng.standard_normal(dims).astype(info.dtype))
        return feeds

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend, "layout": self.layout,
            "inputs": [i.as_dict() for i in self.inputs], "outputs": [o.as_dict() for o in self.outputs],
        }
