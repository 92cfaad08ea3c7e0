"""ONNX -> Keras with onnx2tf, offline and without onnx2tf's slow file saving.

Two onnx2tf traps are handled here:
- For a 4-D, 3-channel input it loads ``calibration_image_sample_data_20x128x128x3_float32.npy``
  from the *current directory* or downloads it. We run it in a private work directory holding that
  file, made from the user's own calibration tensors (NHWC, the model's own normalisation).
- Its own saving serialises Keras metadata (minutes for a ResNet-18). ``disable_model_save=True``
  returns the in-memory Keras model in ~2 s; :mod:`edgekit.quantize.tflite.convert` converts it.
``integer=True`` builds the graph the way onnx2tf's own integer path does: max-pool padding is 0
instead of the dtype minimum, since a -inf pad constant yields an INT8 PADV2 that the XNNPACK
delegate cannot prepare (measured here: ResNet-18's interpreter failed in allocate_tensors).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekit.errors import EdgekitError, first_line

ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
# onnx2tf's rewrites into ops TFLite has (integer) kernels for: the Erf-GELU pattern becomes
# TFLite's GELU (int8 by lookup table), a lone Erf a polynomial of builtins. Without them ``tf.Erf``
# "is neither a custom op nor a flex op" and the conversion of ConvNeXt, ViT or Swin fails.
PSEUDO_OPERATORS = ("gelu", "erf")
ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow"}  # a one-element operand broadcasts as a scalar does


@contextlib.contextmanager
def _in_directory(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """TensorFlow, absl, XLA and onnx2tf write pages per conversion, from Python and straight from
    C++ (``E0000 ... Unable to register cuDNN factory`` on a CPU machine); they show only with -v.
    Imports of TensorFlow belong inside this too: most of its C++ lines come at import."""
    from edgekit import log

    if log.verbosity() >= log.VERBOSE:
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "onnx2tf", "")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with log.native_output(), contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def build_keras(onnx_path: str | Path, work_dir: Path, calib_nhwc: np.ndarray, integer: bool) -> Any:
    """The Keras (tf_keras) model onnx2tf builds for ``onnx_path``; inputs become NHWC."""
    with quiet_tensorflow():
        import onnx2tf

    work_dir.mkdir(parents=True, exist_ok=True)
    # onnx2tf runs onnxsim and writes the simplified graph back over its input file: hand it a copy,
    # never the user's model (measured: the FP32 .onnx changed on disk after a conversion)
    private_copy = work_dir / "model.onnx"
    _write_for_onnx2tf(onnx_path, private_copy)
    sample = calib_nhwc[:20].astype(np.float32)
    np.save(work_dir / ONNX2TF_SAMPLE_FILE, sample)  # read from cwd by onnx2tf: no download
    with _in_directory(work_dir), quiet_tensorflow():
        try:
            return onnx2tf.convert(
                input_onnx_file_path=str(private_copy),
                output_folder_path=str(work_dir / "saved_model"),
                disable_model_save=True,
                output_integer_quantized_tflite=integer,
                replace_to_pseudo_operators=list(PSEUDO_OPERATORS),
                non_verbose=True,
                verbosity="error",
            )
        except SystemExit as exc:  # onnx2tf calls sys.exit on some errors
            raise EdgekitError(f"{onnx_path}: onnx2tf could not translate the graph (exit {exc.code})") from exc
        except Exception as exc:
            raise EdgekitError(f"{onnx_path}: onnx2tf could not translate the graph ({first_line(exc)})") from exc


def _write_for_onnx2tf(onnx_path: str | Path, copy: Path) -> None:
    """The model as onnx2tf translates it best: ``Constant`` nodes become initializers, and scalar
    operands of element-wise arithmetic become one-element arrays (the same broadcast).

    onnx2tf reads a scalar ``Constant`` node as a Python float, which its Div validation then takes
    for a layer: every Erf-GELU as torch exports it (``Div(x, 1.4142135)``, ConvNeXt, ViT, Swin)
    failed with "Output tensors of a Functional model must be the output of a TensorFlow Layer ...
    Found: 1.4142135". And its GELU fusion (Div, Erf, Add, Mul, Mul -> TFLite's GELU, which has an
    int8 kernel) recognises the divisor only as a one-element array: as a scalar, the Erf stayed,
    as float ops, in the "full-integer" model."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    consumers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)

    def as_operand(name: str, value: Any) -> Any:
        array = numpy_helper.to_array(value)
        if array.ndim == 0 and consumers.get(name, set()) <= ELEMENTWISE and consumers.get(name):
            array = array.reshape(1)
        return numpy_helper.from_array(array, name)

    kept, changed = [], False
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and len(node.attribute) == 1 and value is not None:
            graph.initializer.append(as_operand(node.output[0], value))
            changed = True
        else:
            kept.append(node)
    for index, initializer in enumerate(graph.initializer):
        if not initializer.dims and consumers.get(initializer.name, set()) <= ELEMENTWISE:
            graph.initializer[index].CopyFrom(as_operand(initializer.name, initializer))
            changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(kept)
        onnx.save(model, str(copy))
    else:
        shutil.copyfile(onnx_path, copy)
