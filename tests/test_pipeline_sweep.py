"""A pruning sweep in the pipeline (``prune: {ratios: [...]}``): one pruned, distilled, exported,
quantized and measured variant per ratio, each cached on its own, told apart in the report, each
with device parity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli import main
from tests.test_pipeline import SMALL, stage_lines, write_config

SWEEP = {**SMALL, "name": "sweep", "prune": {"ratios": [0.25, 0.5], "round_to": 4},
         "quantize": {"num_samples": 32, "tflite": None},
         "bench": {"targets": ["x86-64-avx2"], "runs": 5, "warmup": 1}}


@pytest.mark.slow
def test_a_sweep_makes_one_variant_per_ratio_each_measured_with_parity(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path, SWEEP)), "--output", str(run)]) == 0
    status = stage_lines(capsys.readouterr().out)
    assert {"prune@r0.25", "prune@r0.5", "distill@r0.25", "distill@r0.5"} <= set(status)
    report = json.loads((run / "report.json").read_text())
    rows = {(r["artifact"], r["runtime"]): r for r in report["rows"]}
    for ratio in ("0.25", "0.5"):
        row = rows[(f"pruned-r{ratio}.int8.onnx", "onnxruntime")]
        assert row["label"] == f"pruned r{ratio}+distilled INT8 ONNX"
    macs = {ratio: rows[(f"pruned-r{ratio}.fp32.onnx", "onnxruntime")]["macs"] for ratio in ("0.25", "0.5")}
    assert macs["0.5"] < macs["0.25"] < rows[("fp32.onnx", "onnxruntime")]["macs"]
    for row in report["rows"]:  # every artifact measured here carries its parity against its own FP32 model
        parity = row["device_parity"]
        assert parity["host_same_artifact"]["agrees"] and parity["cosine"] > 0.99, row["artifact"]
        stem = row["artifact"].rsplit(".", 2)[0]
        assert parity["reference"].startswith("fp32.onnx" if stem in ("fp32", "int8") else f"{stem}.fp32.onnx")
    # one ratio more redoes only that variant's prune and distill, not the others'
    more = {**SWEEP, "prune": {"ratios": [0.25, 0.5, 0.75], "round_to": 4}}
    assert main(["run", str(write_config(tmp_path, more)), "--output", str(run)]) == 0
    status = stage_lines(capsys.readouterr().out)
    assert status["prune@r0.25"] == "up to date" and status["distill@r0.5"] == "up to date"
    assert status["prune@r0.75"] == "running"


def test_ratios_and_target_macs_together_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {**SWEEP, "prune": {"ratios": [0.3], "target_macs": 0.5}})
    assert main(["run", str(config), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "prune" in err and "ratios and target_macs: give one of them" in err and "Traceback" not in err
    config = write_config(tmp_path, {**SWEEP, "prune": {"ratios": [0.3, 0.3]}})
    assert main(["run", str(config), "--output", str(tmp_path / "run")]) == 2
    assert "lists a ratio twice" in capsys.readouterr().err


@pytest.mark.slow
def test_a_latency_target_in_the_pipeline_is_searched_and_recorded(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """``prune.target_latency_ms``: measured where the bench measures (here: this machine with the first
    target's threads); a target the unpruned model meets keeps it unpruned, and says so."""
    config = {**SWEEP, "prune": {"target_latency_ms": 1000.0}, "distill": None, "quantize": {"num_samples": 32,
              "tflite": None}, "bench": {"targets": ["x86-64-avx2"], "runs": 3, "warmup": 1}}
    run = tmp_path / "run"
    assert main(["run", str(write_config(tmp_path, config)), "--output", str(run)]) == 0
    out = capsys.readouterr().out
    assert "the unpruned model already meets it" in out and "ratio/latency measured on this machine" in out
    stage = json.loads((run / "artifacts" / "pruned.pt.json").read_text())["stages"][-1]
    assert stage["latency_search"]["target_ms"] == 1000.0 and stage["latency_search"]["chosen_ratio"] == 0.0
    assert stage["macs_after"] == stage["macs_before"]
    both = write_config(tmp_path, {**SWEEP, "prune": {"ratio": 0.3, "target_latency_ms": 5}})
    assert main(["run", str(both), "--output", str(tmp_path / "other")]) == 2
    assert "ratio and target_latency_ms: give one of them" in capsys.readouterr().err
