"""ONNX Runtime (CPU execution provider)."""
from __future__ import annotations

import numpy as np

from typing import Any

from .base import Runner, TensorInfo

_NP_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
}


class OrtRunner(Runner):
    """``delegate="none"``: no graph optimizations, so no fused INT8 kernels: a QDQ model runs as its
    graph says, each QuantizeLinear/DequantizeLinear in float (the reference its fused kernels are held
    to; see edgekit.quantize.ort.kernels). Float speed; a diagnosis, not a deployment."""
    backend = "onnxruntime"
    package = "onnxruntime"

    def __init__(self, path: str, threads: int | None = None, layout: str | None = None, delegate: str | None = None):
        import onnxruntime as ort

        self.threads = threads
        self.unfused = delegate == "none"
        self.session = ort.InferenceSession(path, self._options(), providers=["CPUExecutionProvider"])
        inputs = [TensorInfo(i.name, i.shape, _NP_DTYPES.get(i.type, np.float32)) for i in self.session.get_inputs()]
        outputs = [TensorInfo(o.name, o.shape, _NP_DTYPES.get(o.type, np.float32)) for o in self.session.get_outputs()]
        super().__init__(path, inputs, outputs)
        self._names = [i.name for i in inputs]
        self.version = ort.__version__

    def _options(self) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if self.unfused:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return options

    def profile(self, feeds: list[np.ndarray], runs: int, top: int) -> dict[str, Any]:
        """A second session with ``enable_profiling`` (same threads and graph optimizations, so the
        same fused kernels run): a few warm-up and ``runs`` inferences, its trace summed per node."""
        import tempfile

        import onnxruntime as ort

        from .op_profile import WARMUP, ort_trace_samples, remove_quietly, summarize

        with tempfile.TemporaryDirectory(prefix="edgekit-prof-") as folder:
            options = self._options()
            options.enable_profiling = True
            options.profile_file_prefix = f"{folder}/ort"
            session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
            named = dict(zip(self._names, feeds))
            for _ in range(WARMUP + runs):
                session.run(None, named)
            trace = session.end_profiling()
            try:
                return summarize(ort_trace_samples(trace, runs), runs, top)
            finally:
                remove_quietly(trace)

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self._names, feeds)))
