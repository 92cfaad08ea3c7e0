"""``--mode dynamic|fp16``: quantization without calibration data, for ONNX Runtime and TFLite, on real
sessions and interpreters; the CLI's flag rules; the pipeline's ``quantize.modes`` and its stage cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from edgekit.cli import main
from edgekit.manifest import read_manifest
from edgekit.quantize.accuracy import accuracy_on
from edgekit.quantize.registry import BACKENDS

TEST = "builtin:digits/test"
MAX_DROP = 1.0  # top-1 points on digits/test (269 images) a mode may lose against FP32; measured: 0 to 0.4


@pytest.fixture(scope="module")
def fp32_top1(digits_fp32_onnx: Path) -> float:
    return accuracy_on(TEST, "digits")(digits_fp32_onnx)


def _onnx_types(path: Path) -> tuple[set[str], set[str], list[int]]:
    """(op types, initializer dtypes, graph I/O element types)."""
    model = onnx.load(str(path))
    dtypes = {onnx.TensorProto.DataType.Name(i.data_type) for i in model.graph.initializer}
    io = [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]
    return {n.op_type for n in model.graph.node}, dtypes, io


def _tflite_types(path: Path) -> tuple[set[str], list[str]]:
    """(dtypes of its tensors, I/O dtypes) from a real interpreter that allocates and runs."""
    from edgekit.runtime.device_runner import load_tflite_interpreter_class

    interpreter = load_tflite_interpreter_class()[0](model_path=str(path))
    interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    interpreter.set_tensor(details["index"], np.zeros(details["shape"], dtype=details["dtype"]))
    interpreter.invoke()
    io = [np.dtype(d["dtype"]).name for d in [*interpreter.get_input_details(), *interpreter.get_output_details()]]
    constants = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}  # an FP32 model has neither
    return constants, io


@pytest.mark.parametrize("backend", ["ort", "tflite"])
@pytest.mark.parametrize("mode", ["dynamic", "fp16"])
def test_mode_writes_a_checked_artifact_of_its_kind(backend: str, mode: str, digits_fp32_onnx: Path,
                                                   digits_calib: np.ndarray, fp32_top1: float, tmp_path: Path) -> None:
    out = tmp_path / f"digits.{mode}{BACKENDS[backend].suffix}"
    result = BACKENDS[backend].load(mode)(digits_fp32_onnx, out, digits_calib[:32], mode=mode)
    assert result.output == out and out.is_file()
    if backend == "ort":
        ops, dtypes, io = _onnx_types(out)
        assert io == [onnx.TensorProto.FLOAT] * 2  # float32 in and out in every mode
        if mode == "dynamic":
            assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops and "UINT8" in dtypes
        else:
            assert "FLOAT16" in dtypes and "FLOAT" not in dtypes and "Cast" in ops
    else:
        constants, io = _tflite_types(out)
        assert io == ["float32", "float32"]
        assert ("int8" if mode == "dynamic" else "float16") in constants
    stage = read_manifest(out)["stages"][-1]
    assert stage["mode"] == mode and stage["label"] == result.label
    assert stage["label"] == {("ort", "dynamic"): "ORT dynamic INT8 (weights)", ("ort", "fp16"): "FP16 ONNX",
                              ("tflite", "dynamic"): "TFLite dynamic-range INT8",
                              ("tflite", "fp16"): "TFLite float16"}[backend, mode]
    assert stage["fidelity"]["ok"] and stage["fidelity"]["samples"] == 32
    assert stage["int8_vs_fp32_speed"]["verdict"] in ("faster", "slower", "no measurable difference")
    top1 = accuracy_on(TEST, "digits")(out)
    assert top1 >= fp32_top1 - MAX_DROP, f"{mode} {backend}: top-1 {top1:.2f} vs FP32 {fp32_top1:.2f}"


def test_cli_needs_no_calibration_for_dynamic_and_fp16_and_names_what_is_missing(
        digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.fp16.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--mode", "fp16", "-o", str(out)]) == 0
    assert read_manifest(out)["stages"][-1]["fidelity"]["source"] == "random"
    assert "FP16 ONNX" in capsys.readouterr().out
    # static without --calib, and an option fp16 does not use: one line each, naming the flag, exit 2
    for argv, flag in ((["--runtime", "onnxruntime", "-o", str(tmp_path / "s.onnx")], "--calib"),
                       (["--runtime", "onnxruntime", "--calib", "builtin:digits/train", "-o", str(tmp_path / "s.onnx")],
                        "--recipe"),
                       (["--runtime", "onnxruntime", "--mode", "fp16", "--per-channel", "-o", str(tmp_path / "p.onnx")],
                        "--per-channel"),
                       (["--runtime", "tflite", "--mode", "dynamic", "--float-io", "-o", str(tmp_path / "p.tflite")],
                        "--float-io")):
        assert main(["quantize", str(digits_fp32_onnx), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"edgekit: error: {flag}:") and "\n" not in err
    # dynamic takes --per-channel; and an existing output is not overwritten without --force
    dyn = tmp_path / "cli.dynamic.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--mode", "dynamic", "--per-channel",
                 "--calib", TEST, "--recipe", "digits", "-o", str(dyn)]) == 0
    assert read_manifest(dyn)["stages"][-1]["per_channel"] is True
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--mode", "dynamic", "-o", str(dyn)]) == 2
    assert "--force" in capsys.readouterr().err
    # same inputs, same artifact
    again = tmp_path / "again.fp16.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--mode", "fp16", "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()


SMALL = {
    "name": "modes",
    "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8}, "input_shape": [1, 3, 32, 32]},
    "data": {"recipe": "digits", "calib": "builtin:digits/train", "eval": "builtin:digits/test"},
    "prune": None, "distill": None,
    "quantize": {"num_samples": 32, "modes": ["dynamic", "fp16"]},
    "bench": {"targets": ["x86-64-avx2"], "runs": 5, "warmup": 1},
}


def _stages(text: str) -> dict[str, str]:
    return {line.split("]")[0][1:]: line.split("] ")[1] for line in text.splitlines()
            if line.startswith("[") and ("up to date" in line or line.endswith("running"))}


def test_pipeline_modes_make_labelled_artifacts_and_a_changed_list_redoes_only_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, run = tmp_path / "pipeline.yaml", tmp_path / "run"
    config.write_text(yaml.safe_dump(SMALL))
    assert main(["run", str(config), "--output", str(run)]) == 0
    names = {p.name for p in (run / "artifacts").iterdir() if not p.name.endswith(".json")}
    assert {"fp32.onnx", "dynamic.onnx", "fp16.onnx", "dynamic.tflite", "fp16.tflite"} <= names
    assert "int8.onnx" not in names  # static is not in the list
    rows = json.loads((run / "report.json").read_text())["rows"]
    labels = {r["artifact"]: r["label"] for r in rows}
    assert labels["dynamic.onnx"] == "INT8 dynamic ONNX" and labels["fp16.tflite"] == "FP16 TFLite"
    assert all(r.get("top1") is not None for r in rows if r["artifact"] in ("fp16.onnx", "dynamic.tflite"))
    capsys.readouterr()
    config.write_text(yaml.safe_dump(dict(SMALL, quantize={"num_samples": 32, "modes": ["fp16"]})))
    assert main(["run", str(config), "--output", str(run)]) == 0
    status = _stages(capsys.readouterr().out)
    assert status["export"] == "up to date" and status["quantize"] == "up to date"
    assert status["quantize_modes"] == "running" and status["eval"] == "running"
