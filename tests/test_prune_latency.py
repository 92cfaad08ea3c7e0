"""``prune --target-latency``: the ratio is searched by measuring the exported candidates, the curve
goes into the manifest, the chosen model meets the target, and an unreachable target is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli import main

MODEL = ["torchvision:resnet18", "--input-shape", "1,3,64,64"]
WINDOW = 0.5  # seconds per measuring process (the default 2 s rides out more noise; the search logic is the same)


@pytest.mark.slow
def test_target_latency_is_met_by_measurement_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    import torchvision

    from edgekit.bench.measure import Measurer
    from edgekit.export import export_onnx

    unpruned = tmp_path / "unpruned.onnx"
    export_onnx(torchvision.models.resnet18(), torch.zeros(1, 3, 64, 64), unpruned)
    # the fastest of three: one measurement slowed by a neighbour's load set a target the unpruned model
    # met in the search (base 0.6 x a slow p50; its ratio-0 p50 3.3 ms already under it: a one-point curve)
    base_ms = min(row["p50"] for row in Measurer(time_budget=WINDOW)([unpruned] * 3))
    target = round(0.6 * base_ms, 3)
    out = tmp_path / "fast.pt"
    assert main(["prune", *MODEL, "--target-latency", str(target), "--window", str(WINDOW), "-o", str(out)]) == 0
    said = capsys.readouterr()
    assert "ratio/latency measured on this machine" in said.out and "<- chosen" in said.out
    assert "holds for this machine only" in said.out
    stage = json.loads(Path(f"{out}.json").read_text())["stages"][0]
    search = stage["latency_search"]
    assert search["target_ms"] == target and search["latency_of"] == "fp32-onnx"
    assert search["curve"][0]["ratio"] == 0.0 and len(search["curve"]) >= 2
    assert search["chosen_p50_ms"] <= target and 0 < search["chosen_ratio"] == round(stage["ratio"], 4)
    assert stage["macs_after"] < stage["macs_before"]
    # the smallest measured ratio that meets the target is the one chosen
    meeting = [p for p in search["curve"] if p["p50_ms"] <= target]
    assert search["chosen_ratio"] == min(p["ratio"] for p in meeting)


def test_an_unreachable_target_latency_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never.pt"
    assert main(["prune", *MODEL, "--target-latency", "0.0001", "--max-ratio", "0.3", "--window", "0.2", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--target-latency 0.0001 ms: not met even at ratio 0.30" in err and "Traceback" not in err
    assert not out.exists()
    assert main(["prune", *MODEL, "--target-latency", "-3", "-o", str(out)]) == 2
    assert "--target-latency" in capsys.readouterr().err
    assert main(["prune", *MODEL, "--target-latency", "5", "--latency-of", "int8-onnx", "-o", str(out)]) == 2
    assert "needs --calib DATA and --recipe NAME" in capsys.readouterr().err
    assert main(["prune", *MODEL, "--target-latency", "5", "--window", "0", "-o", str(out)]) == 2
    assert "--window" in capsys.readouterr().err
