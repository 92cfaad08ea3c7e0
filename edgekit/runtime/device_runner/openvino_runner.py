"""OpenVINO on the CPU: ONNX files (QDQ INT8 included: OpenVINO turns QDQ pairs into FakeQuantize
and runs INT8 kernels) and OpenVINO IR (.xml with its .bin)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .base import Runner, TensorInfo


class OpenVinoRunner(Runner):
    backend = "openvino"
    package = "openvino"

    def __init__(self, path: str, threads: int | None = None, layout: str | None = None, delegate: str | None = None):
        import openvino as ov

        # f32: on CPUs with AMX or AVX512-BF16 OpenVINO otherwise runs FP32 models in bfloat16, so an
        # "FP32" figure would be neither FP32's speed nor its accuracy (QDQ INT8 parts stay INT8)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.config = config
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU", config)
        self.request = self.compiled.create_infer_request()
        super().__init__(path, [_port_info(p, i) for i, p in enumerate(self.compiled.inputs)],
                         [_port_info(p, i) for i, p in enumerate(self.compiled.outputs)])
        self.version = ov.__version__

    def describe(self) -> dict[str, Any]:
        """Also the precisions OpenVINO chose for the compiled graph's nodes (``u8``/``i8``: INT8 kernels ran)."""
        graph = self.compiled.get_runtime_model()
        precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in graph.get_ops()
                      if "runtimePrecision" in op.get_rt_info()}
        return {**super().describe(), "precisions": sorted(precisions)}

    def profile(self, feeds: list[np.ndarray], runs: int, top: int) -> dict[str, Any]:
        """The model compiled again with ``PERF_COUNT``; ``get_profiling_info`` after each of ``runs``
        inferences (it reports the last one). Nodes OpenVINO fused away report NOT_RUN and are left out."""
        import openvino as ov

        from .op_profile import WARMUP, summarize

        core = ov.Core()
        compiled = core.compile_model(core.read_model(self.path), "CPU", {**self.config, "PERF_COUNT": True})
        request = compiled.create_infer_request()
        inputs = dict(enumerate(feeds))
        for _ in range(WARMUP):
            request.infer(inputs)
        samples = []
        for run in range(runs):
            request.infer(inputs)
            samples += [(run, info.node_name, f"{info.node_type} ({info.exec_type})", None, info.real_time.total_seconds())
                        for info in request.get_profiling_info() if info.status == info.Status.EXECUTED]
        return summarize(samples, runs, top)

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(dict(enumerate(feeds)))
        return [np.asarray(results[port]) for port in self.compiled.outputs]


def _port_info(port: Any, index: int) -> TensorInfo:
    names = port.get_names()
    shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
    return TensorInfo(sorted(names)[0] if names else f"port{index}", shape, port.get_element_type().to_dtype())
