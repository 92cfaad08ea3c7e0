"""``edgekit inspect`` on real ONNX and TFLite files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.cli import main
from edgekit.export import export_onnx
from edgekit.inspect import inspect_file


def _model() -> torch.nn.Module:
    """digits_cnn with distinct batch-norm statistics (identical folded biases would be shared)."""
    from edgekit.zoo import digits_cnn

    torch.manual_seed(0)
    model = digits_cnn(width=8).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    return model


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inspect") / "small.onnx"
    export_onnx(_model(), torch.randn(1, 3, 32, 32), path)
    return path


def test_inspect_onnx_counts_params_and_macs(small_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model()
    info = inspect_file(small_onnx)
    assert info["format"] == "onnx" and info["quantization"] == "none (float)"
    assert info["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert info["ops"]["Conv"] == 7 and info["ops"]["Gemm"] == 1
    # batch norm folds into the convolutions: parameters = convs with bias + linear
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    expected_params = sum(c.weight.numel() + c.out_channels for c in convs) + 10 * 32 + 10
    assert info["params"] == expected_params
    # MACs by hand: each conv's output elements x (cin * 3 * 3), plus the classifier
    sizes = [32, 32, 32, 16, 16, 16, 8]
    expected_macs = sum(c.out_channels * s * s * c.in_channels * 9 for c, s in zip(convs, sizes)) + 32 * 10
    assert info["macs"] == expected_macs
    assert main(["inspect", str(small_onnx), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == expected_macs
    assert main(["inspect", str(small_onnx)]) == 0
    text = capsys.readouterr().out
    assert "quantization: none (float)" in text and f"{expected_macs:,}" in text


def test_inspect_quantized_onnx(small_onnx: Path, tmp_path: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": np.random.default_rng(i).random((1, 3, 32, 32), np.float32)} for i in range(4)])

        def get_next(self):  # noqa: ANN201
            return next(self.items, None)

    out = tmp_path / "q.onnx"
    quantize_static(str(small_onnx), str(out), Reader(), quant_format=QuantFormat.QDQ)
    info = inspect_file(out)
    assert info["quantization"] == "int8 QDQ"
    assert info["inputs"][0]["quantization"]["scale"] > 0
    assert info["weight_dtypes"].get("int8", 0) >= 7


def test_inspect_tflite(tmp_path: Path) -> None:
    import tensorflow as tf

    model = tf.keras.Sequential([tf.keras.Input((8, 8, 3)), tf.keras.layers.Conv2D(4, 3), tf.keras.layers.Flatten(),
                                 tf.keras.layers.Dense(2)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.random.default_rng(i).random((1, 8, 8, 3), np.float32)] for i in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = tmp_path / "m.tflite"
    path.write_bytes(converter.convert())
    info = inspect_file(path)
    assert info["format"] == "tflite"
    assert info["quantization"] == "full-integer int8 (integer input and output)"
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["quantization"]["scale"] > 0
    assert info["ops"]["CONV_2D"] == 1 and info["ops"]["FULLY_CONNECTED"] == 1
    assert info["macs"] == 6 * 6 * 4 * 27 + 2 * 144
    assert info["params"] >= 4 * 27 + 2 * 144


@pytest.mark.parametrize(("content", "name", "message"), [
    (b"\x00garbage", "bad.onnx", "bad.onnx: not a valid ONNX model"),
    (b"garbage", "bad.tflite", "bad.tflite: not a loadable TFLite model"),
    (b"x", "model.bin", "model.bin: cannot inspect .bin files"),
    (None, "absent.onnx", "absent.onnx: file not found"),
])
def test_inspect_bad_files(content: bytes | None, name: str, message: str, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def _sixteen_by_eight(path: Path) -> Path:
    """LayerNorm's first step, x - mean(x), converted by TensorFlow to 16x8 (int16 activations, int8 weights)."""
    import tensorflow as tf

    function = tf.function(lambda x: x - tf.reduce_mean(x, -1, keepdims=True),
                           input_signature=[tf.TensorSpec([1, 4, 8], tf.float32)]).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([np.random.default_rng(i).standard_normal((1, 4, 8), np.float32)]
                                                for i in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int16
    path.write_bytes(converter.convert())
    return path


def test_inspect_says_a_16x8_model_is_not_int8(tmp_path: Path) -> None:
    info = inspect_file(_sixteen_by_eight(tmp_path / "m.tflite"))
    assert info["quantization"] == "full-integer 16x8 (int16 activations, int8 weights) (integer input and output)"


def test_a_kernel_that_aborts_on_a_parsed_model_is_not_called_a_corrupt_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 16x8 ViT from TensorFlow's own converter aborted the interpreter in SUB's Prepare (an input
    scale of zero); edgekit said the file was corrupt or truncated. Here the same abort, on SUB."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    path = _sixteen_by_eight(tmp_path / "m.tflite")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    graph = model.subgraphs[0]
    sub = next(op for op in graph.operators
               if max(model.operatorCodes[op.opcodeIndex].builtinCode,
                      model.operatorCodes[op.opcodeIndex].deprecatedBuiltinCode) == schema.BuiltinOperator.SUB)
    graph.tensors[sub.inputs[1]].quantization.scale = [0.0]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgekit: error: {path}: the TFLite interpreter crashed on this file (signal 6 SIGABRT) "
                          "while preparing its ops (allocate_tensors): the file parses"), err
    assert len(err.splitlines()) == 1
