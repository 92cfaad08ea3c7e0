"""A model exported with a dynamic height and width (``dynamic_axes``, as detectors and segmenters
often are): quantized for both runtimes at the calibration images' size, and benchmarked at the size
the user gives, never at a 1x1 stand-in."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main


@pytest.fixture(scope="module")
def dynamic_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                                torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(8, 10)).eval()
    path = tmp_path_factory.mktemp("dynamic") / "dynamic.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    return path


def quantize_record(path: Path) -> dict:
    manifest = json.loads(Path(f"{path}.json").read_text())
    return next(s for s in manifest["stages"] if s["stage"] == "quantize")


def test_tflite_full_integer_of_a_dynamic_size_model_is_converted_at_the_calibration_size(
        dynamic_onnx: Path, tmp_path: Path) -> None:
    """onnx2tf checked it on a 1x1 input, and its FP32 TFLite missed the ONNX model (cosine 0.9985)."""
    from edgekit.runtime import open_runner

    out = tmp_path / "int8.tflite"
    assert main(["quantize", str(dynamic_onnx), "--runtime", "tflite", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "32", "--no-sensitivity", "-o", str(out)]) == 0
    runner = open_runner(str(out))
    assert runner.inputs[0].shape[1:] == [32, 32, 3] and runner.inputs[0].dtype == np.int8
    record = quantize_record(out)
    assert record["fidelity"]["cosine"] >= 0.99


def test_ort_int8_speed_of_a_dynamic_size_model_is_measured_at_the_calibration_size(
        dynamic_onnx: Path, tmp_path: Path) -> None:
    """Timed on a 1x1 stand-in, the 3x3 convolution refused it and no speed figure was recorded."""
    out = tmp_path / "int8.onnx"
    assert main(["quantize", str(dynamic_onnx), "--runtime", "onnxruntime", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "32", "--no-sensitivity", "-o", str(out)]) == 0
    speed = quantize_record(out)["int8_vs_fp32_speed"]
    assert speed["fp32_p50_ms"] > 0 and speed["int8_p50_ms"] > 0, speed


def test_bench_of_a_dynamic_size_model_needs_its_size_and_times_that_size(
        dynamic_onnx: Path, digits_fp32_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", str(dynamic_onnx), "--runs", "3", "--warmup", "0", "--json", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{dynamic_onnx.name}: could not be benchmarked" in err and "--input-shape" in err
    assert not out.exists()
    # one shape for the run: the dynamic model is timed at it, the static one at its own
    assert main(["bench", str(dynamic_onnx), str(digits_fp32_onnx), "--runs", "3", "--warmup", "0",
                 "--input-shape", "1,3,48,64", "--json", str(out)]) == 0
    shapes = {r["artifact"]: r["input_shape"] for r in json.loads(out.read_text())["results"]}
    assert shapes == {dynamic_onnx.name: [1, 3, 48, 64], digits_fp32_onnx.name: [1, 3, 32, 32]}
    assert main(["bench", str(dynamic_onnx), "--input-shape", "1,3", "--json", str(tmp_path / "b.json")]) == 2
    assert "--input-shape 1,3 does not fit input 'x' of shape [?, 3, ?, ?]" in capsys.readouterr().err
    # a size no example input may have (1.2e11 bytes of random floats) is refused before anything runs
    with pytest.raises(SystemExit) as exited:  # argparse's usage error, as for export's --input-shape
        main(["bench", str(dynamic_onnx), "--input-shape", "1,3,100000,100000", "--json", str(tmp_path / "c.json")])
    assert exited.value.code == 2
    assert "more than the 268,435,456 an example input may have" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
