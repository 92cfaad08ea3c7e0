"""INT8 fidelity to FP32, measured after every quantization; the ORT remedies; INT8 slower than FP32 said.

Real ORT sessions and TFLite interpreters throughout; the "poor" model is a tiny conv net with one
activation channel scaled by 1e4 (and the next layer scaled back), so FP32 computes the same
function while a per-tensor activation scale drowns the other channels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.cli import main
from edgekit.manifest import read_manifest
from edgekit.quantize import fidelity
from edgekit.quantize.ort import speed
from edgekit.quantize.ort.workflow import quantize_ort_workflow


def _stage(path: Path) -> dict:
    return next(s for s in read_manifest(path)["stages"] if s["stage"] == "quantize")


@pytest.fixture(scope="module")
def outlier_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    with torch.no_grad():  # same function in FP32; one channel's range is 1e4 x the others'
        net[0].weight[0] *= 1e4
        net[0].bias[0] *= 1e4
        net[2].weight[:, 0] /= 1e4
    path = tmp_path_factory.mktemp("outlier") / "outlier.onnx"
    export_onnx(net, torch.zeros(1, 3, 32, 32), path)
    return path


@pytest.fixture(scope="module")
def layernorm_gelu_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small LayerNorm+GELU MLP over a 3x8x8 image: the ops ORT runs in float inside a QDQ graph."""
    import torch

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    blocks = [torch.nn.Flatten()] + [m for _ in range(3) for m in (
        torch.nn.LazyLinear(64), torch.nn.LayerNorm(64), torch.nn.GELU())] + [torch.nn.Linear(64, 10)]
    net = torch.nn.Sequential(*blocks)
    net(torch.zeros(1, 3, 8, 8))
    path = tmp_path_factory.mktemp("lngelu") / "mlp.onnx"
    export_onnx(net.eval(), torch.zeros(1, 3, 8, 8), path)
    return path


def test_fidelity_recorded_for_ort_and_no_remedy_when_faithful(digits_fp32_onnx: Path, digits_calib: np.ndarray,
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "d.int8.onnx"
    with caplog.at_level("INFO", logger="edgekit"):
        result = quantize_ort_workflow(digits_fp32_onnx, out, digits_calib, progress=False, sensitivity=False)
    held = min(fidelity.HOLDOUT, len(digits_calib) // 4)
    assert result.fidelity.samples == held and result.fidelity.source == "held-out"
    assert result.fidelity.ok and result.fidelity.cosine > 0.99 and result.fidelity.agreement >= 97.0
    stage = _stage(out)
    assert stage["fidelity"] == result.fidelity.as_dict()
    assert stage["calibration"]["num_samples"] == len(digits_calib) - held and stage["calibration"]["held_out"] == held
    assert "remedies" not in stage and "remedies_s" not in result.timings  # faithful: no remedy ran
    speed_record = stage["int8_vs_fp32_speed"]
    assert speed_record["fp32_p50_ms"] > 0 and speed_record["int8_p50_ms"] > 0
    assert speed_record["verdict"] in ("faster", "slower", "no measurable difference")
    assert any(r.getMessage().startswith(f"fidelity vs FP32 on {held} held-out images: cosine ") for r in caplog.records)
    # the figure is independent of the workflow: re-measured on the written file, on other samples
    again = fidelity.measure(digits_fp32_onnx, out, digits_calib[:32])
    assert again.cosine > 0.99


def test_fidelity_recorded_for_tflite(digits_fp32_onnx: Path, digits_calib: np.ndarray, tmp_path: Path) -> None:
    from edgekit.quantize.tflite import quantize_tflite

    out = tmp_path / "d.int8.tflite"
    result = quantize_tflite(digits_fp32_onnx, out, digits_calib, progress=False, write_fp32=False)
    assert result.fidelity is not None and result.fidelity.source == "held-out"
    assert result.fidelity.ok, result.fidelity
    assert _stage(out)["fidelity"]["cosine"] == round(result.fidelity.cosine, 6)


def test_poor_int8_is_remedied(outlier_onnx: Path, digits_calib: np.ndarray, tmp_path: Path,
                               caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "o.int8.onnx"
    with caplog.at_level("INFO", logger="edgekit"):
        result = quantize_ort_workflow(outlier_onnx, out, digits_calib, progress=False)
    tried = result.details["remedies"]["tried"]
    before, after = tried[0], result.details["remedies"]["chosen"]
    assert before["remedy"] == "as configured" and before["cosine"] < fidelity.MIN_COSINE
    assert after["cosine"] >= fidelity.MIN_COSINE and result.fidelity.ok
    assert not any("not faithful" in w for w in result.warnings)
    assert after["layers_in_float"] == len(result.nodes_excluded) > 0  # the settings alone do not fix an outlier channel
    assert len(tried) >= 2 and all("cosine" in row and "agreement" in row for row in tried)
    assert _stage(out)["remedies"]["chosen"] == after
    chose = [r.getMessage() for r in caplog.records if r.getMessage().startswith("remedy: chose ")]
    assert len(chose) == 1 and f"cosine {before['cosine']:.4f} -> {after['cosine']:.4f}" in chose[0]
    assert fidelity.measure(outlier_onnx, out, digits_calib[:32]).cosine >= fidelity.MIN_COSINE


def test_no_remedies_keeps_the_poor_model_and_warns(outlier_onnx: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.int8.onnx"
    code = main(["quantize", str(outlier_onnx), "--backend", "ort", "--calib", "builtin:digits/train", "--recipe",
                 "digits", "--num-samples", "120", "--no-sensitivity", "--no-remedies", "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    assert "fidelity vs FP32 on 30 held-out images: cosine 0.9" in captured.out
    warning = [line for line in captured.err.splitlines() if "not faithful" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: INT8 is not faithful to FP32: output cosine 0.")
    assert "without --no-remedies" in warning[0] and "Traceback" not in captured.err
    stage = _stage(out)
    assert stage["fidelity"]["ok"] is False and "remedies" not in stage


def test_ops_left_in_float_are_found(layernorm_gelu_onnx: Path, digits_fp32_onnx: Path, digits_calib: np.ndarray,
                                     tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 3, 8, 8)).astype(np.float32)
    out = tmp_path / "mlp.int8.onnx"
    quantize_ort_workflow(layernorm_gelu_onnx, out, calib, progress=False, sensitivity=False, remedies=False)
    found = speed.float_ops_between_qdq(onnx.load(str(out)))
    assert found["LayerNormalization"] == 3 and found["Erf"] + found.get("Gelu", 0) >= 3, found
    assert "LayerNormalization x3" in speed.reason(out, {})
    digits_int8 = tmp_path / "d.int8.onnx"  # a plain conv net: ORT has an integer kernel for every op
    quantize_ort_workflow(digits_fp32_onnx, digits_int8, digits_calib[:40], progress=False, sensitivity=False)
    assert not speed.float_ops_between_qdq(onnx.load(str(digits_int8)))


def test_slower_int8_is_said_with_its_reason(layernorm_gelu_onnx: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The timing is injected (a 2-core shared machine cannot make a real slow-down reliable); the
    graph, its quantization and the reason are real."""
    from edgekit.log import configure

    configure()  # what the CLI does: warnings as "warning: ..." lines (alone, this test must not lean on another's set-up)
    calib = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)

    def timer(path: Path) -> dict:  # INT8 twice as slow, with CIs that do not overlap
        p50 = 1.0 if path == layernorm_gelu_onnx else 2.0
        return {"p50": p50, "p50_ci95": [p50 * 0.95, p50 * 1.05]}

    out = tmp_path / "mlp.int8.onnx"
    result = quantize_ort_workflow(layernorm_gelu_onnx, out, calib, progress=False, sensitivity=False,
                                   remedies=False, timer=timer)
    record = _stage(out)["int8_vs_fp32_speed"]
    assert record["verdict"] == "slower" and record["ratio"] == 0.5 and "LayerNormalization x3" in record["reason"]
    slow = [w for w in result.printed_warnings() if w.startswith("INT8 runs at 0.50x FP32 speed")]
    assert len(slow) == 1 and "LayerNormalization" in slow[0]
    assert not any("FP32 speed" in w for w in _stage(out).get("warnings", []))  # timings stay out of the manifest's warnings
    assert any(line.startswith("warning: INT8 runs at 0.50x") for line in capsys.readouterr().err.splitlines())

    from edgekit.report.collect import describe_variant
    from edgekit.report.render import quantize_notes

    row = {**describe_variant(read_manifest(out), out.name), "cosine": None}
    notes = quantize_notes(row)
    assert any(n.startswith("INT8 SLOWER than FP32 at quantize time (0.50x)") for n in notes)
    assert any(n.startswith("fidelity at quantize time: cosine ") for n in notes)
    assert not any(n.startswith("fidelity") for n in quantize_notes({**row, "cosine": 0.999}))  # eval's wins


def test_fidelity_threshold_and_warning_text() -> None:
    good = fidelity.Fidelity(0.9991, 98.4, 64, "held-out")
    assert good.ok and good.warning("x") is None and good.shortfall() == 0
    assert good.line() == "fidelity vs FP32 on 64 held-out images: cosine 0.9991, top-1 agreement 98.4%"
    poor = fidelity.Fidelity(0.999, 90.0, 64, "held-out")
    assert not poor.ok and poor.shortfall() == pytest.approx(7.0)
    assert poor.warning("try X").endswith("top-1 agreement 90.0% < 97% on 64 images; try X")
