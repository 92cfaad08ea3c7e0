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
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekit import log
from edgekit.errors import EdgekitError, first_line
from edgekit.quantize.tflite.layer_memo import layer_outputs_reused
from edgekit.quantize.onnx_tokens import TOKEN_SCALE_IMAGES
from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf
from edgekit.worker import raise_if_swallowed

ONNX2TF_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
# onnx2tf's rewrites into ops TFLite has (integer) kernels for: the Erf-GELU pattern becomes
# TFLite's GELU (int8 by lookup table), a lone Erf a polynomial of builtins. Without them ``tf.Erf``
# "is neither a custom op nor a flex op" and the conversion of ConvNeXt, ViT or Swin fails.
PSEUDO_OPERATORS = ("gelu", "erf")
PREPARED_COPY = "model.onnx"  # the rewritten graph onnx2tf reads, in build_keras's work_dir


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
    private_copy = work_dir / PREPARED_COPY
    prepare_for_onnx2tf(onnx_path, private_copy, image_shape=(calib_nhwc.shape[3], *calib_nhwc.shape[1:3]),
                        calibration=calib_nhwc[:TOKEN_SCALE_IMAGES].transpose(0, 3, 1, 2))
    sample = calib_nhwc[:20].astype(np.float32)
    np.save(work_dir / ONNX2TF_SAMPLE_FILE, sample)  # read from cwd by onnx2tf: no download
    printed = io.StringIO()  # onnx2tf names the failing ONNX node only in what it prints
    # Keras numbers its auto-named layers per process (tf.math.add_3), and the .tflite carries the names:
    # the second conversion of the same model in one process wrote different bytes than the first
    with quiet_tensorflow():
        import tf_keras
    tf_keras.backend.clear_session()
    with _in_directory(work_dir), quiet_tensorflow(), contextlib.redirect_stdout(printed), layer_outputs_reused():
        try:
            built = onnx2tf.convert(
                input_onnx_file_path=str(private_copy),
                output_folder_path=str(work_dir / "saved_model"),
                disable_model_save=True,
                output_integer_quantized_tflite=integer,
                replace_to_pseudo_operators=list(PSEUDO_OPERATORS),
                # onnx2tf runs onnxsim as a command found on PATH, so whether it ran depended on the venv
                # being activated: the same model and images then gave different .tflite bytes (FastViT-T8:
                # other bytes, the same fidelity). Never: what every test and the zoo measured (PATH there
                # has no venv; edgekit's own rewrites fold the graph).
                not_use_onnxsim=True,
                non_verbose=True,
                verbosity="error",
            )
            raise_if_swallowed()  # a Ctrl-C that TensorFlow turned into an error onnx2tf caught
            return built
        except SystemExit as exc:  # onnx2tf calls sys.exit on some errors
            raise_if_swallowed()
            raise EdgekitError(f"{onnx_path}: onnx2tf could not translate {_failed_node(printed.getvalue())}"
                               f"(exit {exc.code})") from exc
        except ModuleNotFoundError as exc:  # onnx2tf imports one module per ONNX operator it translates
            if not (exc.name or "").startswith("onnx2tf.ops."):
                raise
            raise EdgekitError(_untranslatable_operator(onnx_path, private_copy, exc.name.rsplit(".", 1)[1])) from exc
        except Exception as exc:
            raise_if_swallowed()  # the error may be the Ctrl-C itself, turned into TensorFlow's own
            raise EdgekitError(f"{onnx_path}: onnx2tf could not translate {_failed_node(printed.getvalue())}"
                               f"({first_line(exc)})") from exc
        finally:
            if log.verbosity() >= log.VERBOSE:
                sys.stdout.write(printed.getvalue())


NON_NEGATIVE_OPS = ("Relu", "Sigmoid", "Softplus")


def integer_graph_computes_float(model: Any) -> bool:
    """Whether the Keras model built with ``integer=True`` computes exactly what the float build does,
    so one onnx2tf run serves the INT8 and the FP32 conversion (onnx2tf takes minutes on a transformer:
    measured 573 s of swin_t's 1064 s TFLite stage at 128 px, the float build 423 s more). The builds
    differ only in a max-pool's padding constant (0 instead of the dtype minimum), and a 0 never wins
    a window when the pooled tensor is never negative (a ReLU's output): every window holds a real
    element. True when no max-pool pads, or every padded one reads such a tensor."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name: init for init in model.graph.initializer}
    constants.update({node.output[0]: attr.t for node in model.graph.node if node.op_type == "Constant"
                      for attr in node.attribute if attr.name == "value"})
    for node in model.graph.node:
        if node.op_type == "MaxPool" and _pads(node) and not _never_negative(node.input[0], producers, constants):
            return False
    return True


def _pads(node: Any) -> bool:
    """Whether onnx2tf pads this max-pool's input with its constant."""
    attrs = {a.name: a for a in node.attribute}
    auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    explicit = "pads" in attrs and any(attrs["pads"].ints)
    ceil = "ceil_mode" in attrs and attrs["ceil_mode"].i  # onnx2tf pads the far side to round up
    return auto_pad.startswith("SAME") or explicit or bool(ceil)


def _never_negative(tensor: str, producers: dict[str, Any], constants: dict[str, Any]) -> bool:
    import onnx.numpy_helper

    node = producers.get(tensor)
    if node is None:
        return False
    if node.op_type in NON_NEGATIVE_OPS:
        return True
    if node.op_type == "Clip":  # ReLU6: min is its second input (a constant) or, in old opsets, an attribute
        if len(node.input) > 1 and node.input[1] in constants:
            return bool(onnx.numpy_helper.to_array(constants[node.input[1]]).min() >= 0)
        return any(a.name == "min" and a.f >= 0 for a in node.attribute)
    if node.op_type in ("MaxPool", "Concat"):  # the max, or the union, of never-negative values
        return all(_never_negative(name, producers, constants) for name in node.input)
    return False


def _untranslatable_operator(onnx_path: str | Path, model_path: Path, op_type: str) -> str:
    """One line: the first layer of an operator onnx2tf has no translation for, and what to do."""
    import onnx

    layers = [n.name or n.output[0] for n in onnx.load(str(model_path), load_external_data=False).graph.node
              if n.op_type == op_type]
    where = f"layer {layers[0]} " + (f"(and {len(layers) - 1} more) " if len(layers) > 1 else "") if layers else ""
    return (f"{onnx_path}: onnx2tf could not translate {where}(operator {op_type} has no TFLite translation in "
            "onnx2tf; export the model without it, or use --runtime onnxruntime)")


def _failed_node(printed: str) -> str:
    """``layer /features/1/mlp/Add `` from onnx2tf's ``onnx_op_name: wa/features/1/mlp/Add`` line, else
    ``the graph ``: which layer to --protect or report, in the one line."""
    import re

    found = re.findall(r"onnx_op_name: (\S+)", re.sub(r"\x1b\[[0-9;]*m", "", printed))
    return f"layer {re.sub('^wa/', '/', found[-1])} " if found else "the graph "
