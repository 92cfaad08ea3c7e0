"""ONNX Runtime static INT8, one quantization: pre-processing, calibration on prepared tensors,
QDQ or QOperator, into a scratch file. The workflow (``workflow.py``) decides which and writes the
artifact and its manifest."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.quantize.ort.calibration_cache import CalibrationCache
from edgekit.quantize.ort.calibration_memory import chunked_calibration
from edgekit.quantize.ort.entropy import fast_entropy_thresholds
from edgekit.quantize.onnx_tokens import constant_tokens_kept_apart
from edgekit.quantize.ort.settings import OrtQuantSettings

CALIBRATION_SAMPLES_HELD = 8  # images whose activations ORT's calibrator holds at once (calibration_memory)
COMPUTE_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]  # quantize_ops="compute": where INT8 saves the time


class _TensorReader:
    """A CalibrationDataReader over prepared NCHW tensors, one sample per call, with a progress bar."""

    def __init__(self, input_name: str, tensors: np.ndarray, batch: int, progress: bool) -> None:
        from edgekit.log import progress as progress_bar

        self.input_name = input_name
        self.tensors = tensors
        self.batch = batch
        self.position = 0
        self.bar = progress_bar(total=len(tensors), desc="calibrating (ORT)", unit="img",
                                disable=None if progress else True)

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


@dataclasses.dataclass(frozen=True)
class CalibrationFeed:
    """The model's one float image input and the calibration tensors that fit it (whole batches)."""

    input_name: str
    dims: list[Any]
    tensors: np.ndarray
    batch: int

    @property
    def shape(self) -> list[int]:
        """One batch's shape: what timing feeds a model whose input dimensions are dynamic."""
        return [self.batch, *self.tensors.shape[1:]]


def calibration_feed(model: Any, tensors: np.ndarray, label: str | Path) -> CalibrationFeed:
    """Check ``tensors`` against the (already checked) ONNX ``model``'s input; ``label`` names it in errors."""
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(graph_inputs) != 1:
        raise EdgekitError(f"{label}: the model has {len(graph_inputs)} inputs; calibration feeds one image input")
    graph_input = graph_inputs[0]
    if graph_input.type.tensor_type.elem_type != 1:  # onnx.TensorProto.FLOAT
        import onnx

        dtype = onnx.TensorProto.DataType.Name(graph_input.type.tensor_type.elem_type).lower()
        raise EdgekitError(f"{label}: input {graph_input.name!r} is {dtype}; INT8 quantization calibrates a "
                           "float32 image input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    if tensors.ndim != len(dims) or any(d is not None and d != t for d, t in zip(dims[1:], tensors.shape[1:])):
        if tensors.ndim == 4 == len(dims) and dims[1:] == [*tensors.shape[2:], tensors.shape[1]]:
            raise EdgekitError(
                f"{label}: model input {graph_input.name!r} is channels-last {dims} (NHWC); calibration feeds "
                f"NCHW images, PyTorch's layout ({list(tensors.shape[1:])} per item): export the model with an "
                "NCHW input")
        raise EdgekitError(
            f"{label}: model input {graph_input.name!r} has shape {dims}, calibration tensors have "
            f"{list(tensors.shape[1:])} per item (check --recipe)"
        )
    if len(tensors) == 0:
        raise EdgekitError(f"{label}: no calibration tensors")
    batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
    if len(tensors) < batch:
        raise EdgekitError(f"{label}: the model takes batches of {batch}, there are only {len(tensors)} calibration tensors")
    usable = tensors[: len(tensors) - len(tensors) % batch] if batch > 1 else tensors
    return CalibrationFeed(graph_input.name, dims, usable, batch)


def preprocess(onnx_in: str | Path, work: Path, calibration: np.ndarray | None = None) -> Path:
    """ORT's pre-processing (shape inference, graph optimisation), once per model: every
    quantization of a search starts from the same prepared graph. With ``calibration`` (a few
    images), a ViT's class token is then kept apart from the patch tokens' int8 scales
    (:mod:`edgekit.quantize.onnx_tokens`): random ViT-B/32 at 128 px, MinMax INT8 0.928 -> 0.995."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(work).resolve() / "prepared.onnx"
    onnx_in = Path(onnx_in).resolve()
    # in the scratch folder: when its symbolic shape inference gives up, ORT writes
    # sym_shape_infer_temp.onnx and a <uuid>.data beside it into the *current* directory (seen: Swin)
    with _quiet(), contextlib.chdir(prepared.parent):
        try:
            quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=False)
        except Exception:  # symbolic shape inference fails on some graphs; ORT's own fallback
            try:
                quant_pre_process(str(onnx_in), str(prepared), skip_symbolic_shape=True)
            except Exception as exc:
                raise EdgekitError(f"{onnx_in}: ONNX Runtime pre-processing failed ({first_line(exc)})") from exc
    _rewrite_prepared(prepared, calibration)
    return prepared


def _rewrite_prepared(path: Path, calibration: np.ndarray | None) -> None:
    """One load and at most one save of the prepared file for both rewrites: node names, then the
    token rewrites where ``calibration`` is given (not on a model whose weights lie outside the file,
    over 2 GB: the rewrites evaluate constants in memory)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # external tensors stay where they are
    changed = _name_nodes(model)
    if calibration is not None and not any(t.data_location == onnx.TensorProto.EXTERNAL
                                           for t in model.graph.initializer):
        changed = constant_tokens_kept_apart(model, calibration) or changed
    if changed:
        onnx.save(model, str(path))


def _name_nodes(model: Any) -> bool:
    """Give every unnamed node a unique name (``Conv_3``): ORT keeps a layer in float by its name
    (--exclude, the sensitivity ranking, the kernel remedy), and an ONNX file may leave names empty.
    Whether any was unnamed."""
    taken = {node.name for node in model.graph.node}
    unnamed = [node for node in model.graph.node if not node.name]
    for index, node in enumerate(unnamed):
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)
    return bool(unnamed)


def quantize_prepared(
    prepared: Path,
    out: Path,
    feed: CalibrationFeed,
    settings: OrtQuantSettings,
    nodes_to_exclude: Sequence[str] = (),
    progress: bool = False,
    label: str | Path = "",
    cache: CalibrationCache | None = None,
) -> Path:
    """Calibrate and quantize a pre-processed model into ``out`` (a scratch path: no manifest);
    ``cache``: calibrations of earlier calls on the same ``prepared`` and feed, reused where they apply."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = settings.for_host()
    averaging = settings.average_ranges and settings.calibrate_method == "MinMax"
    key = (str(prepared), feed.tensors.__array_interface__["data"][0], feed.tensors.shape, settings.calibrate_method,
           averaging, settings.quantize_ops, settings.weight_type)
    with _quiet(), chunked_calibration(max(1, CALIBRATION_SAMPLES_HELD // max(feed.batch, 1)), mean=averaging), \
            fast_entropy_thresholds(), cache.serving(key) if cache is not None else contextlib.nullcontext():
        try:
            quantize_static(
                str(prepared), str(out), _TensorReader(feed.input_name, feed.tensors, feed.batch, progress),
                quant_format=QuantFormat.QDQ if settings.format == "QDQ" else QuantFormat.QOperator,
                activation_type=QuantType.QUInt8 if settings.activation_type == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8 if settings.weight_type == "int8" else QuantType.QUInt8,
                per_channel=settings.per_channel,
                reduce_range=bool(settings.reduce_range),
                calibrate_method=getattr(CalibrationMethod, settings.calibrate_method),
                nodes_to_exclude=list(nodes_to_exclude),
                op_types_to_quantize=COMPUTE_OPS if settings.quantize_ops == "compute" else None,
                extra_options={"CalibMovingAverage": averaging},
            )
        except EdgekitError:
            raise
        except Exception as exc:
            raise EdgekitError(f"{label or prepared}: ONNX Runtime quantization failed ({first_line(exc)})") from exc
    return out


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
