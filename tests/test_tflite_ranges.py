"""TFLite's range remedy: mean min/max activation ranges when the converter's absolute ones lose fidelity.

Real conversions and TFLite interpreters: the trained digits CNN calibrated on digits images of which
a few carry a 40x-bright patch (a rare outlier the absolute min/max takes as every tensor's range),
measured on clean digits images.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.manifest import read_manifest
from edgekit.quantize import fidelity

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def outlier_calib(digits_calib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibration tensors, 2 of them with a 40x-bright patch; clean held-out tensors)."""
    calib, clean = digits_calib[:64].copy(), digits_calib[64:88]
    calib[[7, 47], :, 8:16, 8:16] *= 40.0
    return calib, clean


def _stage(path: Path) -> dict:
    return next(s for s in read_manifest(path)["stages"] if s["stage"] == "quantize")


def test_mean_ranges_are_chosen_when_an_outlier_sets_the_absolute_ones(
        digits_fp32_onnx: Path, outlier_calib: tuple[np.ndarray, np.ndarray], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from edgekit.inspect import inspect_tflite
    from edgekit.quantize.tflite import quantize_tflite

    calib, clean = outlier_calib
    out = tmp_path / "d.int8.tflite"
    with caplog.at_level("INFO", logger="edgekit"):
        result = quantize_tflite(digits_fp32_onnx, out, calib, holdout=clean, progress=False, write_fp32=False)
    record = result.details["remedies"]
    before, chosen = record["tried"][0], record["chosen"]
    assert before["ranges"] == "minmax" and before["cosine"] < fidelity.MIN_COSINE
    assert chosen["ranges"] == "mean" and chosen["cosine"] > before["cosine"] + 0.01
    assert result.settings["ranges"] == "mean" and result.label.endswith("(mean min/max ranges)")
    assert result.fidelity.cosine == pytest.approx(chosen["cosine"], abs=1e-6)
    stage = _stage(out)
    assert stage["remedies"]["chosen"] == chosen and stage["label"] == result.label
    assert any(r.getMessage().startswith("remedy: chose mean min/max ranges (cosine ") for r in caplog.records)
    # the written model is what was measured, and its input range is the mean of each image's min and max
    assert fidelity.measure(digits_fp32_onnx, out, clean).cosine == pytest.approx(chosen["cosine"], abs=1e-6)
    scale = inspect_tflite(out)["inputs"][0]["quantization"]["scale"]
    nhwc = calib.transpose(0, 2, 3, 1).reshape(len(calib), -1)
    low, high = min(nhwc.min(axis=1).mean(), 0.0), max(nhwc.max(axis=1).mean(), 0.0)
    assert scale == pytest.approx((high - low) / 255.0, rel=0.01)
    assert scale < (nhwc.max() - min(nhwc.min(), 0.0)) / 255.0 / 4  # the absolute range would be > 4x coarser


def test_no_remedies_keeps_the_absolute_ranges(digits_fp32_onnx: Path, outlier_calib: tuple[np.ndarray, np.ndarray],
                                               tmp_path: Path) -> None:
    from edgekit.quantize.tflite import quantize_tflite

    calib, clean = outlier_calib
    out = tmp_path / "d.int8.tflite"
    result = quantize_tflite(digits_fp32_onnx, out, calib, holdout=clean, progress=False, write_fp32=False,
                             remedies=False)
    assert result.settings["ranges"] == "minmax" and "remedies" not in result.details
    assert result.fidelity.cosine < fidelity.MIN_COSINE and result.label == "TFLite full-integer INT8"
    assert any("not faithful" in w for w in result.warnings)


def _fid(cosine: float, agreement: float, samples: int = 32) -> fidelity.Fidelity:
    return fidelity.Fidelity(cosine, agreement, samples, "held-out")


def test_agreement_within_its_noise_leaves_the_ranking_to_the_cosine() -> None:
    # 2 images in 32 fewer agreeing: within the noise of 32 samples, and the cosine is far better
    assert _fid(0.916, 6.25).improves_on(_fid(0.696, 18.75))
    assert not _fid(0.696, 18.75).improves_on(_fid(0.916, 6.25))
    # the same drop on 640 samples is real: the agreement shortfall ranks
    assert not _fid(0.916, 6.25, 640).improves_on(_fid(0.696, 18.75, 640))
    # 100% -> 50% of 32 is beyond noise, whatever the cosine
    assert not _fid(0.999, 50.0).improves_on(_fid(0.98, 100.0))
    # a gain below the margin is not a change
    assert not _fid(0.9801, 100.0).improves_on(_fid(0.98, 100.0))
    assert fidelity.agreement_noise(_fid(0.9, 100.0), _fid(0.9, 100.0)) == 0.0
    # a detector's agreement (mAP vs FP32's) is no proportion of samples: its shortfall ranks as it is
    detection = [fidelity.Fidelity(c, a, 32, "held-out", "detection") for c, a in ((0.916, 6.25), (0.696, 18.75))]
    assert not detection[0].improves_on(detection[1])
