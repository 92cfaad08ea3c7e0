"""Neighbours of the issue-10 bad-input cases that no other test names: models that are not one float
image in and [N, classes] out, data files whose labels or tensors are broken, labels beyond the
model's classes. Each must be one line naming the file, exit 2, never an internal error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from model_files import assert_one_line_error


def _onnx(path: Path, inputs: list[tuple[str, int, list[int]]], nodes: list, output: list[int],
          initializers: list | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, output)], initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from onnx import TensorProto, helper, numpy_helper

    root = tmp_path_factory.mktemp("odd")
    f, shape = TensorProto.FLOAT, [1, 3, 32, 32]
    pool = [helper.make_node("GlobalAveragePool", ["s"], ["p"]), helper.make_node("Flatten", ["p"], ["output"])]
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    return {
        "two_inputs": _onnx(root / "two.onnx", [("a", f, shape), ("b", f, shape)],
                            [helper.make_node("Add", ["a", "b"], ["s"]), *pool], [1, 3]),
        "int64_input": _onnx(root / "int64.onnx", [("x", TensorProto.INT64, shape)],
                             [helper.make_node("Cast", ["x"], ["s"], to=f), *pool], [1, 3]),
        "no_input": _onnx(root / "const.onnx", [], [helper.make_node("Identity", ["c"], ["output"])], [1, 4],
                          [numpy_helper.from_array(np.ones((1, 4), np.float32), "c")]),
        "4d_output": _onnx(root / "seg.onnx", [("input", f, shape)], [helper.make_node("Conv", ["input", "w"], ["output"])],
                           [1, 4, 30, 30], [w]),
        "four_classes": _onnx(root / "four.onnx", [("input", f, shape)],
                              [helper.make_node("Conv", ["input", "w"], ["s"]), *pool], [1, 4], [w]),
    }


def _call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


EVAL = ["--data", "builtin:digits/test", "--recipe", "digits", "--num-samples", "16"]


@pytest.mark.parametrize("model, needle", [
    ("two_inputs", "2 inputs"), ("int64_input", "int64"), ("no_input", "0 inputs"), ("4d_output", "[N, classes]"),
    ("four_classes", "outputs 4 classes"),
])
def test_eval_refuses_models_that_are_not_one_image_classifier(odd_models: dict[str, Path], model: str, needle: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _call(["eval", str(odd_models[model]), *EVAL], capsys)
    assert_one_line_error(code, err, needle)


@pytest.mark.parametrize("model, needle", [("two_inputs", "2 inputs"), ("int64_input", "int64"),
                                           ("no_input", "0 inputs")])
def test_quantize_refuses_models_without_one_float_input(odd_models: dict[str, Path], model: str, needle: str,
                                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _call(["quantize", str(odd_models[model]), "--backend", "ort", "--calib", "builtin:digits/train",
                       "--recipe", "digits", "--num-samples", "8", "--no-sensitivity", "-o",
                       str(tmp_path / "out" / "q.onnx")], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_bench_of_a_model_without_inputs(odd_models: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _call(["bench", str(odd_models["no_input"]), "--runs", "2", "--warmup", "0"], capsys)
    assert code == 0, err


BROKEN_NPZ = {
    "float_labels": (dict(x=np.zeros((4, 3, 32, 32), np.float32), y=np.array([0.5, 1.2, np.nan, 3])), "non-integer"),
    "negative_label": (dict(x=np.zeros((4, 3, 32, 32), np.float32), y=np.array([-1, 0, 1, 2])), "negative"),
    "short_labels": (dict(x=np.zeros((4, 3, 32, 32), np.float32), y=np.array([0, 1])), "2 labels for 4 samples"),
    "2d_labels": (dict(x=np.zeros((4, 3, 32, 32), np.float32), y=np.zeros((4, 2), np.int64)), "1-D"),
    "nan_tensors": (dict(x=np.full((4, 3, 32, 32), np.nan, np.float32)), "NaN"),
    "object_tensors": (dict(x=np.array([{"a": 1}] * 4, dtype=object)), "not readable"),
    "bool_tensors": (dict(x=np.zeros((4, 3, 32, 32), bool)), "bool"),
    "complex_tensors": (dict(x=np.zeros((4, 3, 32, 32), np.complex64)), "complex64"),
    "label_beyond_classes": (dict(x=np.zeros((4, 32, 32, 3), np.uint8), y=np.array([0, 1, 2, 20])), "class index 20"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_NPZ))
def test_eval_names_a_broken_npz(case: str, odd_models: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    arrays, needle = BROKEN_NPZ[case]
    data = tmp_path / f"{case}.npz"
    np.savez(data, **arrays)  # object arrays are pickled into the file: edgekit must refuse, not unpickle
    code, err = _call(["eval", str(odd_models["four_classes"]), "--data", str(data), "--recipe", "digits"], capsys)
    assert_one_line_error(code, err, needle, data.name)
