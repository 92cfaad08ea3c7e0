"""ONNX Runtime (CPU execution provider)."""
from __future__ import annotations

import numpy as np

from .base import Runner, TensorInfo

_NP_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


class OrtRunner(Runner):
    backend = "onnxruntime"
    package = "onnxruntime"

    def __init__(self, path: str, threads: int | None = None, layout: str | None = None, delegate: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs = [TensorInfo(i.name, i.shape, _NP_DTYPES.get(i.type, np.float32)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, o.shape, _NP_DTYPES.get(o.type, np.float32)) for o in self.session.get_outputs()]
        super().__init__(path, inputs, outputs)
        self._names = [i.name for i in inputs]
        self.version = ort.__version__

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self._names, feeds)))
