"""ONNX Runtime static INT8: pre-processing, calibration on prepared tensors, QDQ or QOperator."""
from __future__ import annotations

import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.atomic import atomic_path, check_can_write, work_dir
from edgekit.errors import EdgekitError, first_line
from edgekit.inspect import load_onnx
from edgekit.manifest import derive_manifest, write_manifest
from edgekit.quantize.ort.settings import OrtQuantSettings, host_defaults


class _TensorReader:
    """A CalibrationDataReader over prepared NCHW tensors, one sample per call, with a progress bar."""

    def __init__(self, input_name: str, tensors: np.ndarray, batch: int, progress: bool) -> None:
        from tqdm import tqdm

        self.input_name = input_name
        self.tensors = tensors
        self.batch = batch
        self.position = 0
        self.bar = tqdm(total=len(tensors), desc="calibrating (ORT)", unit="img", disable=None if progress else True, leave=False)

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.tensors):
            self.bar.close()
            return None
        chunk = self.tensors[self.position:self.position + self.batch]
        self.position += len(chunk)
        self.bar.update(len(chunk))
        return {self.input_name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.position = 0


def check_calibration_shape(onnx_path: str | Path, tensors: np.ndarray) -> tuple[str, list[Any]]:
    """The model's input name and shape; calibration tensors must match it per item."""
    model = load_onnx(onnx_path)
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(graph_inputs) != 1:
        raise EdgekitError(f"{onnx_path}: the model has {len(graph_inputs)} inputs; calibration feeds one image input")
    graph_input = graph_inputs[0]
    if graph_input.type.tensor_type.elem_type != 1:  # onnx.TensorProto.FLOAT
        import onnx

        dtype = onnx.TensorProto.DataType.Name(graph_input.type.tensor_type.elem_type).lower()
        raise EdgekitError(f"{onnx_path}: input {graph_input.name!r} is {dtype}; INT8 quantization calibrates a "
                           "float32 image input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    if tensors.ndim != len(dims) or any(d is not None and d != t for d, t in zip(dims[1:], tensors.shape[1:])):
        raise EdgekitError(
            f"{onnx_path}: model input {graph_input.name!r} has shape {dims}, calibration tensors have "
            f"{list(tensors.shape[1:])} per item (check --recipe)"
        )
    if len(tensors) == 0:
        raise EdgekitError(f"{onnx_path}: no calibration tensors")
    return graph_input.name, dims


def quantize_ort(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calib: np.ndarray,
    settings: OrtQuantSettings | None = None,
    *,
    nodes_to_exclude: Sequence[str] = (),
    calibration_info: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
    extra_stage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quantize ``onnx_in`` to ``onnx_out`` (default settings: this host's); returns the manifest stage."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = (settings or host_defaults()).validate()
    check_can_write(onnx_out, force, inputs=[onnx_in])
    input_name, dims = check_calibration_shape(onnx_in, calib)
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    usable = calib[: len(calib) - len(calib) % batch] if batch > 1 else calib
    started = time.perf_counter()
    with work_dir(onnx_out) as work, atomic_path(onnx_out, force) as tmp:
        prepared = Path(work) / "prepared.onnx"
        with _quiet():
            try:
                quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=False)
            except Exception:  # symbolic shape inference fails on some graphs; ORT's own fallback
                quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=True)
            try:
                quantize_static(
                    str(prepared), str(tmp), _TensorReader(input_name, usable, batch, progress),
                    quant_format=QuantFormat.QDQ if settings.format == "QDQ" else QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8 if settings.activation_type == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8 if settings.weight_type == "int8" else QuantType.QUInt8,
                    per_channel=settings.per_channel,
                    reduce_range=settings.reduce_range,
                    calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
                    nodes_to_exclude=list(nodes_to_exclude),
                    extra_options={"CalibMovingAverage": False},
                )
            except EdgekitError:
                raise
            except Exception as exc:
                raise EdgekitError(f"{onnx_in}: ONNX Runtime quantization failed ({first_line(exc)})") from exc
    stage = {
        "stage": "quantize", "backend": "ort", **settings.as_dict(), "label": settings.label(),
        "nodes_excluded": list(nodes_to_exclude), "calibration": calibration_info or {"num_samples": len(usable)},
        "seconds": round(time.perf_counter() - started, 2),
    }
    stage.update(extra_stage or {})
    write_manifest(onnx_out, derive_manifest(onnx_in, onnx_out, stage))
    return stage


@contextlib.contextmanager
def _quiet():
    """ORT's quantizer logs and prints per node; keep the terminal for our progress bar."""
    previous = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.getLogger().setLevel(previous)
