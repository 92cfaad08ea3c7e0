"""Do ONNX Runtime's fused INT8 kernels compute what the QDQ model says? Not always (open, see below).

A ShuffleNet-V2-x0.5 trained on digits at 128 px (zoo --weights digits; rounding floor 0.990)
quantized to ORT INT8 at cosine 0.78-0.81 whatever the settings or remedies, while the same INT8
file run unfused (graph optimizations at basic: each QuantizeLinear/DequantizeLinear in float)
reached 0.994. The loss is its first convolution alone (3 -> 24 channels, 3x3, stride 2, ReLU),
whose trained, BatchNorm-folded weights are ``data/shufflenet_v2_x0_5_digits_stem.npz``: this
script builds that one layer, quantizes it with edgekit (``quantize_ort``, the CLI's settings) on
the zoo's calibration images, and measures its INT8 output against FP32 fused (ORT's default
session: QLinearConv) and unfused. Measured on an Intel Xeon with AVX-512 VNNI and AMX (ORT 1.23.0):
fused 0.81-0.86 with errors up to 8.75 on outputs up to 7.93, unfused 0.99992; 7-bit weights and
per-tensor weights alike (fused 0.810, unfused 0.9999). The fused figure is not repeatable: four
sessions on one INT8 file gave 0.835, 0.839, 0.851 and 0.837; the unfused one is. A one-off on the same layer: S8 activations
the same, QOperator (QLinearConv written directly) 0.836 both ways. Whether another CPU shows it is
what this script records (``machine`` in the results). Next: the smallest input that differs, an
upstream report (onnxruntime#24711 and #32132 are of this class), then a remedy in the workflow.

    PYTHONPATH=. python benchmarks/bench_ort_fused_kernels.py     # ~1 min
"""
from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, save_summary  # noqa: E402

STEM = Path(__file__).resolve().parent / "data" / "shufflenet_v2_x0_5_digits_stem.npz"
SIZE = 128


def stem_model(path: Path) -> None:
    """The stem as a float ONNX model: Conv (stride 2, pad 1) and ReLU, NCHW input at ``SIZE``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.load(STEM)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weight", "bias"], ["conv"], kernel_shape=[3, 3], strides=[2, 2],
                          pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["output"])],
        "stem", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 24, SIZE // 2, SIZE // 2])],
        [numpy_helper.from_array(weights["weight"], "weight"), numpy_helper.from_array(weights["bias"], "bias")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def outputs(path: Path, images: np.ndarray, level: str) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": image[None]})[0] for image in images]).reshape(len(images), -1)


def main() -> None:
    logging.disable(logging.WARNING)
    import zoo
    from edgekit.quantize.ort import quantize_ort
    from edgekit.quantize.ort.settings import OrtQuantSettings
    from edgekit.tasks.base import output_cosine

    calib, held_out = zoo.images(SIZE)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "stem.onnx", Path(folder) / "stem.int8.onnx"
        stem_model(fp32)
        reference = outputs(fp32, held_out, "ORT_DISABLE_ALL")
        for label, settings in (("default", {}), ("7-bit weights", {"reduce_range": True}),
                                ("per-tensor weights", {"per_channel": False})):
            quantize_ort(fp32, int8, calib, force=True, progress=False, settings=OrtQuantSettings(**settings))
            fused, unfused = outputs(int8, held_out, "ORT_ENABLE_ALL"), outputs(int8, held_out, "ORT_DISABLE_ALL")
            for mode, got in (("fused", fused), ("unfused", unfused)):
                rows.append({"comparison": f"ShuffleNet stem INT8 ({label}), {mode}", "metric": "cosine to FP32",
                             "value": round(output_cosine(got, reference), 5)})
            log(f"{label}: fused {rows[-2]['value']}, unfused {rows[-1]['value']}, max abs error fused "
                f"{float(np.abs(fused - reference).max()):.2f} on outputs up to {float(reference.max()):.2f}")
    save_summary("ort_fused_kernels", rows, machine=zoo.machine(), commit=zoo.git_commit(),
                 onnxruntime=__import__("onnxruntime").__version__)


if __name__ == "__main__":
    main()
