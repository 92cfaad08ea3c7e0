"""ONNX Runtime without calibration data: ``dynamic`` (INT8 weights, activations quantized at run
time by DynamicQuantizeLinear) and ``fp16`` (float16 weights and arithmetic, float32 input/output).

Dynamic weights are uint8: ORT's CPU provider has ConvInteger only for uint8 x uint8 (int8 weights
fail at session creation, measured with onnxruntime 1.23). FP16 keeps float32 I/O
(``keep_io_types``) so the runners, eval and bench feed it as they feed FP32; where the CPU has no
float16 kernel ORT inserts Casts, so FP16 is often *slower* than FP32 on a CPU: measured and said.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.atomic import atomic_path, check_can_write, work_dir
from edgekit.errors import EdgekitError, first_line
from edgekit.inspect import float_onnx
from edgekit.manifest import derive_manifest, write_manifest
from edgekit.quantize import nocalib, speed
from edgekit.quantize.ort.quantizer import _quiet, calibration_feed, preprocess
from edgekit.quantize.registry import get_mode
from edgekit.quantize.result import QuantizeResult
from edgekit.runtime.verify import verify_onnx

_log = logging.getLogger(__name__)

ADVICE = {"dynamic": "use --mode static with representative --calib images, or keep this model in FP32",
          "fp16": "some weights or activations leave float16's range: keep this model in FP32"}


def _slow_reason(mode: str) -> speed.Reason:
    def why(fp32_p50_ms: float) -> str | None:
        if mode == "fp16":
            return ("ONNX Runtime's CPU provider has float16 kernels for few ops on this CPU and casts to float32 "
                    "around the others; FP16 pays off on GPUs, NPUs and ARM CPUs with float16 arithmetic")
        return (speed.small_model_reason(fp32_p50_ms) or "each DynamicQuantizeLinear computes its activation's "
                "range at run time, and ConvInteger has only a generic uint8 kernel; --mode static is faster")
    return why


def _dynamic(prepared: Path, out: Path, per_channel: bool, reduce_range: bool, label: str | Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        try:
            quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QUInt8, per_channel=per_channel,
                             reduce_range=reduce_range)
        except Exception as exc:
            raise EdgekitError(f"{label}: ONNX Runtime dynamic quantization failed ({first_line(exc)})") from exc


def _fp16(model: Any, out: Path, label: str | Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        with _quiet():
            converted = convert_float_to_float16(model, keep_io_types=True)
        # the I/O Casts are appended after the nodes that read them: onnx.checker rejects the graph unsorted
        OnnxModel.graph_topological_sort(converted.graph, is_deterministic=True)
        onnx.save(converted, str(out))
    except Exception as exc:
        raise EdgekitError(f"{label}: FP16 conversion failed ({first_line(exc)})") from exc


def quantize_ort_nocalib(
    fp32: str | Path,
    out: str | Path,
    samples: np.ndarray | None = None,
    *,
    mode: str,
    per_channel: bool = False,
    reduce_range: bool = False,
    source: str = "held-out",
    model: Any = None,
    threads: int | None = None,
    timer: speed.Timer | None = None,
    force: bool = False,
    calibration_info: dict[str, Any] | None = None,
) -> QuantizeResult:
    """``fp32`` -> ``out`` in ``mode`` (``dynamic`` or ``fp16``), checked (onnx.checker and an ORT session),
    its fidelity to FP32 measured on ``samples`` (else random inputs) and its speed against FP32 here.
    ``calibration_info``: what ``samples`` are (the manifest's ``calibration``; none were calibrated on)."""
    fp32, out = Path(fp32), Path(out)
    kind = get_mode(mode)
    if kind.needs_calibration:
        raise EdgekitError(f"--mode {mode}: needs calibration (quantize_ort_workflow)")
    check_can_write(out, force, inputs=[fp32])
    model = float_onnx(fp32, model)
    samples, source = nocalib.fidelity_samples(model, samples, fp32, source)
    label = kind.labels["ort"]
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with work_dir(out.absolute()) as work:  # absolute: its TMPDIR must survive the chdir of ORT and onnx2tf
        made = work / f"{mode}.onnx"
        if mode == "dynamic":
            _dynamic(preprocess(fp32, work), made, per_channel, reduce_range, fp32)
        else:
            _fp16(model, made, fp32)
        verify_onnx(made, session=True)
        timings["quantize_s"] = time.perf_counter() - started
        faithful, note = nocalib.check(fp32, made, samples, source, label)
        timed = calibration_feed(model, samples, fp32).shape  # a dynamic input is timed at the samples' size
        pace = speed.checked(fp32, made, timer or speed.default_timer(threads, timed), _slow_reason(mode), timings)
        with atomic_path(out, force) as tmp:
            shutil.copyfile(made, tmp)
    timings["total_s"] = time.perf_counter() - started
    settings = {"weight_type": "uint8", "per_channel": per_channel, "reduce_range": reduce_range} \
        if mode == "dynamic" else {"keep_io_types": True}
    result = QuantizeResult(
        backend="ort", label=label, paths={"int8": out}, settings=settings, mode=mode,
        calibration={**(calibration_info or {}), "needed": False, "fidelity_samples": int(len(samples)),
                     "fidelity_source": source},
        timings=timings, fidelity=faithful, details={"int8_vs_fp32_speed": pace},
        warnings=nocalib.warnings(label, faithful, note, ADVICE[mode]),
    )
    if faithful is not None:
        _log.info(f"{label}: {faithful.line()}")
    result.say_warnings(_log)  # stderr as "warning: ...", kept by -q
    write_manifest(out, derive_manifest(fp32, out, result.stage()))
    return result
