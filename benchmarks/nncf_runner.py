"""NNCF post-training quantization of one FP32 ONNX model; runs in .venv-nncf (bench_nncf.py calls it).

    .venv-nncf/bin/python benchmarks/nncf_runner.py FP32.onnx CALIB.npy OUT.onnx INFO.json

CALIB.npy: float32 NCHW calibration images, fed one per inference (batch 1). Options: NNCF's
defaults except ``preset=PERFORMANCE`` (symmetric activations and weights) and ``subset_size`` =
every calibration image; the defaults keep fast bias correction on. INFO.json gets the versions,
the options and the seconds it took. Imports nothing from edgekit: this venv has no edgekit.
"""
from __future__ import annotations

import inspect
import json
import sys
import time

import nncf
import numpy as np
import onnx
import onnxruntime


def main() -> None:
    fp32, calib_path, out, info = sys.argv[1:5]
    model = onnx.load(fp32)
    initializers = {i.name for i in model.graph.initializer}
    name = next(i.name for i in model.graph.input if i.name not in initializers)
    calib = np.load(calib_path).astype(np.float32)
    items = [calib[i:i + 1] for i in range(len(calib))]
    dataset = nncf.Dataset(items, lambda x: {name: x})
    options = {"preset": nncf.QuantizationPreset.PERFORMANCE, "subset_size": len(items)}
    started = time.perf_counter()
    quantized = nncf.quantize(model, dataset, **options)
    seconds = time.perf_counter() - started
    onnx.save(quantized, out)
    signature = inspect.signature(nncf.quantize)  # what the options left out default to, read from nncf itself
    defaults = {k: str(p.default.value if hasattr(p.default, "value") else p.default)
                for k, p in signature.parameters.items() if k not in ("model", "calibration_dataset", *options)}
    with open(info, "w") as file:
        json.dump({"seconds": round(seconds, 1),
                   "versions": {"nncf": nncf.__version__, "onnx": onnx.__version__,
                                "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
                   "options": {"preset": "PERFORMANCE", "subset_size": len(items), **defaults},
                   "opset": model.opset_import[0].version}, file)


if __name__ == "__main__":
    main()
