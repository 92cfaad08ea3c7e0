"""One way to build a measured run directory for the report tests: real quantization, real
evaluation, real benchmarks of the digits model (the conftest fixtures), laid out as `edgekit run`
lays it out (artifacts/ with manifests, eval/, bench/)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np


def build_run(run: Path, fp32_onnx: Path, calib: np.ndarray, *, tflite: bool = True, sensitivity: bool = False,
              evaluate: bool = True, **bench: Any) -> Path:
    """``run`` with fp32.onnx, int8.onnx (with its sensitivity ranking when asked), int8.tflite unless
    ``tflite`` is False, their evaluations on builtin:digits/test unless ``evaluate`` is False, and
    one benchmark of them all with ``bench`` as :func:`edgekit.bench.benchmark` keyword arguments."""
    from edgekit.bench import benchmark
    from edgekit.quantize.ort.workflow import quantize_ort_workflow
    from edgekit.quantize.tflite import quantize_tflite

    artifacts = run / "artifacts"
    artifacts.mkdir(parents=True)
    fp32 = artifacts / "fp32.onnx"
    shutil.copy(fp32_onnx, fp32)
    shutil.copy(str(fp32_onnx) + ".json", str(fp32) + ".json")
    quantize_ort_workflow(fp32, artifacts / "int8.onnx", calib, sensitivity=sensitivity, remedies=False, progress=False)
    variants = [fp32, artifacts / "int8.onnx"]
    if tflite:
        quantize_tflite(fp32, artifacts / "int8.tflite", calib[:64], write_fp32=False, progress=False)
        variants.append(artifacts / "int8.tflite")
    if evaluate:
        from edgekit.evaluate import evaluate as evaluate_artifact

        (run / "eval").mkdir()
        for path in variants:
            result = evaluate_artifact(path, "builtin:digits/test", "digits", reference=fp32)
            (run / "eval" / f"{path.name}.json").write_text(json.dumps(result))
    (run / "bench").mkdir()
    (run / "bench" / "local.json").write_text(json.dumps(benchmark(variants, **bench)))
    return run
