"""ONNX -> TFLite without calibration data: ``dynamic`` (dynamic-range INT8: int8 weights, activations
quantized at run time by the hybrid kernels) and ``fp16`` (float16 weights, dequantized to float32
by the CPU delegate at load time: a half-size file, FP32 arithmetic on a CPU). Float32 NHWC I/O.

Same fast path as full-integer INT8 (onnx2tf -> in-memory Keras -> concrete-function converter, see
``convert.py``), on the float graph; the FP32 ``.tflite`` it is timed against is made from the same
Keras model in the scratch folder (not written: ``--mode static`` writes that reference).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.atomic import atomic_path, check_can_write, work_dir
from edgekit.errors import EdgekitError
from edgekit.inspect import float_onnx, inspect_tflite
from edgekit.manifest import derive_manifest, write_manifest
from edgekit.quantize import nocalib, speed
from edgekit.quantize.registry import get_mode
from edgekit.quantize.result import QuantizeResult
from edgekit.quantize.tflite.convert import to_tflite
from edgekit.quantize.tflite.keras_build import build_keras
from edgekit.runtime.verify import verify_tflite

_log = logging.getLogger(__name__)

ADVICE = {"dynamic": "use --mode static with representative --calib images, or keep this model in FP32",
          "fp16": "some weights leave float16's range: keep this model in FP32"}


def _slow_reason(mode: str) -> speed.Reason:
    def why(fp32_p50_ms: float) -> str | None:
        if mode == "fp16":
            return "float16 weights are dequantized to float32 here: the arithmetic is FP32's"
        return (speed.small_model_reason(fp32_p50_ms) or "the hybrid kernels quantize each activation at run "
                "time; --mode static (full-integer) is faster")
    return why


def quantize_tflite_nocalib(
    onnx_path: str | Path,
    output_path: str | Path,
    samples: np.ndarray | None = None,
    *,
    mode: str,
    source: str = "held-out",
    model: Any = None,
    force: bool = False,
    progress: bool = True,
    calibration_info: dict[str, Any] | None = None,
) -> QuantizeResult:
    """``onnx_path`` -> ``output_path`` in ``mode`` (``dynamic`` or ``fp16``), checked (the interpreter
    allocates and runs it in a child), its fidelity to the FP32 ONNX model measured on ``samples``
    (else random inputs) and its speed against the FP32 ``.tflite``."""
    output_path = Path(output_path)
    kind = get_mode(mode)
    if kind.needs_calibration:
        raise EdgekitError(f"--mode {mode}: needs calibration (quantize_tflite)")
    if output_path.suffix.lower() != ".tflite":
        raise EdgekitError(f"{output_path}: the output must end in .tflite")
    check_can_write(output_path, force, inputs=[onnx_path])
    model = float_onnx(onnx_path, model)
    samples, source = nocalib.fidelity_samples(model, samples, onnx_path, source)
    if samples.ndim != 4:
        raise EdgekitError(f"{onnx_path}: TFLite conversion expects 4-D image inputs, got {samples.ndim}-D tensors")
    nhwc = np.ascontiguousarray(samples.transpose(0, 2, 3, 1), dtype=np.float32)  # onnx2tf's sample file
    label = kind.labels["tflite"]
    timings: dict[str, float] = {}
    with work_dir(output_path.absolute()) as scratch:  # absolute: its TMPDIR must survive onnx2tf's chdir
        started = time.perf_counter()
        if progress:
            _log.info(f"[tflite] ONNX -> Keras (onnx2tf) -> {label}")
        keras_model = build_keras(onnx_path, scratch / "float", nhwc, integer=False)
        timings["onnx2tf_s"] = time.perf_counter() - started
        t0 = time.perf_counter()
        made = to_tflite(keras_model, None, weights=mode, progress=progress)
        timings["convert_s"] = time.perf_counter() - t0
        reference = scratch / "fp32.tflite"
        reference.write_bytes(to_tflite(keras_model, None, progress=progress))
        with atomic_path(output_path, force) as tmp:
            tmp.write_bytes(made)
            verify_tflite(tmp, invoke=True, any_name=True, label=str(output_path))
        timings["total_s"] = time.perf_counter() - started
        faithful, note = nocalib.check(onnx_path, output_path, samples, source, label)
        pace = speed.checked(reference, output_path, speed.default_timer(None), _slow_reason(mode), timings)
    info = inspect_tflite(output_path)
    result = QuantizeResult(
        backend="tflite", label=label, paths={"int8": output_path}, settings={"float_io": True}, mode=mode,
        calibration={**(calibration_info or {}), "needed": False, "fidelity_samples": int(len(samples)),
                     "fidelity_source": source},
        float_ops=info["float_ops"], timings=timings, fidelity=faithful,
        details={"ops": info["ops"], "converter": "edgekit-fast", "int8_vs_fp32_speed": pace},
        warnings=nocalib.warnings(label, faithful, note, ADVICE[mode]),
    )
    if faithful is not None:
        _log.info(f"{label}: {faithful.line()}")
    result.say_warnings(_log)  # stderr as "warning: ...", kept by -q
    write_manifest(output_path, derive_manifest(onnx_path, output_path, result.stage(),
                                                input_spec={"layout": "NHWC", "dtype": info["inputs"][0]["dtype"]},
                                                outputs=info["outputs"]))
    return result
