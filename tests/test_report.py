"""The report from a real run directory: artifacts, evaluations and benchmarks made here."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from run_dirs import build_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits_fp32_onnx: Path, digits_calib: np.ndarray) -> Path:
    return build_run(tmp_path_factory.mktemp("run"), digits_fp32_onnx, digits_calib, target="x86-64-avx2", runs=40,
                     warmup=5)


def test_report_files(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    assert "wrote" in capsys.readouterr().out
    document = json.loads((run_dir / "report.json").read_text())
    assert document["schema"] == "edgekit.report/1" and document["baseline"] == "fp32.onnx"
    # the x86 profile lists onnxruntime, tflite and openvino: one row per (artifact, runtime)
    on_openvino = any(r["runtime"] == "openvino" for r in document["rows"])
    pairs = [(r["artifact"], r["runtime"]) for r in document["rows"]]
    assert sorted(pairs) == sorted([("fp32.onnx", "onnxruntime"), *[("fp32.onnx", "openvino")] * on_openvino,
                                    ("int8.onnx", "onnxruntime"), *[("int8.onnx", "openvino")] * on_openvino,
                                    ("int8.tflite", "tflite")])
    # sorted by group (the baseline's runtime first), then p50 within each group
    groups = [r["runtime"] for r in document["rows"]]
    assert groups[0] == "onnxruntime" and groups == sorted(groups, key=groups.index)  # each group contiguous
    for a, b in zip(document["rows"], document["rows"][1:]):
        if a["runtime"] == b["runtime"]:
            assert a["latency_ms"]["p50"] <= b["latency_ms"]["p50"]
    rows = {r["artifact"]: r for r in document["rows"] if r["runtime"] != "openvino"}
    base = rows["fp32.onnx"]
    assert base["is_baseline"] and base["speedup"] == pytest.approx(1.0) and base["vs_baseline"] == "baseline"
    assert base["top1_delta"] == 0 and base["label"] == "FP32 ONNX" and base["macs"] > 0
    int8 = rows["int8.onnx"]
    assert int8["label"] == "INT8 ONNX" and int8["quantization"] in ("QDQ U8S8 per-channel", "QDQ U8S8 7-bit per-channel")
    assert int8["speedup"] == pytest.approx(base["latency_ms"]["p50"] / int8["latency_ms"]["p50"])
    assert int8["vs_baseline"] in ("faster", "slower", "no measurable difference")
    assert int8["top1_delta"] == pytest.approx(int8["top1"] - base["top1"])
    assert rows["int8.tflite"]["runtime"] == "tflite" and rows["int8.tflite"]["macs"] == base["macs"]
    assert base["runtime_label"] == "ONNX Runtime" and rows["int8.tflite"]["runtime_label"] == "TFLite"
    for row in document["rows"]:
        if row["runtime"] == "openvino":  # the same file on OpenVINO: its own row, measured against the baseline
            assert row["runtime_label"] == "OpenVINO" and not row["is_baseline"] and row["top1"] is not None
            assert row["speedup"] == pytest.approx(base["latency_ms"]["p50"] / row["latency_ms"]["p50"])
    assert [r["is_baseline"] for r in document["rows"]].count(True) == 1
    # Pareto: no marked row is dominated by another
    for row in document["rows"]:
        if row["pareto"]:
            assert not any(o["latency_ms"]["p50"] < row["latency_ms"]["p50"] and o["top1"] > row["top1"] for o in document["rows"])
    assert any(r["pareto"] for r in document["rows"])
    markdown = (run_dir / "report.md").read_text()
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ") and ".onnx" in line or ".tflite |" in line]
    assert len([line for line in markdown.splitlines() if re.match(r"\| \d+ +\| (\*\*)?(pruned|FP32|INT8)", line)]) == len(pairs)
    assert ("| OpenVINO " in markdown) == on_openvino and "| ONNX Runtime " in markdown
    assert table_lines
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not re.search(r"(src|href)=[\"']https?://", page), "report.html must be self-contained"
    assert "<table>" in page and "Pareto" in page
    # what to ship: per runtime, the fastest row at most 1 point below the baseline, first on the page
    ship = document["summary"]["ship"]
    assert {d["runtime"] for d in ship} == {r["runtime"] for r in document["rows"]}  # digits INT8 keeps top-1
    for decision in ship:
        group = [r for r in document["rows"] if r["runtime"] == decision["runtime"]]
        allowed = [r for r in group if r["score"] >= base["score"] - 1.0]
        assert decision["artifact"] == min(allowed, key=lambda r: r["latency_ms"]["p50"])["artifact"]
        assert decision["p50_ms"] == min(r["latency_ms"]["p50"] for r in allowed)
        assert decision["score_delta"] == pytest.approx(decision["score"] - base["score"])
        assert f"**{decision['label']}" in markdown and decision["label"] in page
    assert [r["ship"] for r in document["rows"]].count(True) == len(ship)
    assert markdown.index("## What to ship") < markdown.index("| #") and page.index('id="ship"') < page.index("<table>")
    assert page.count('<tr class="ship">') == len(ship)


def test_report_bad_inputs(tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no bench/*.json and no eval/*.json" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    (broken / "bench" / "local.json").write_text(json.dumps({"schema": "something/9"}))
    assert main(["report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "local.json: field 'schema' is 'something/9', expected 'edgekit.bench/1'" in err and err.count("\n") == 1


def test_cells_show_intervals_where_measured_and_degrade_without() -> None:
    """The columns the comparison fields feed: intervals and verdict when present, today's fields when not."""
    from edgekit.report.cells import delta_text, speedup_text, versus_text

    row = {"is_baseline": False, "speedup": 4.114, "vs_baseline": "faster", "noisy": True, "score_delta": -0.37,
           "top1_delta": -0.37, "speedup_ci95": [3.9, 4.3], "score_delta_ci95": [-1.1, 0.4],
           "score_verdict": "no measurable difference"}
    assert speedup_text(row) == "4.11x (3.90–4.30)" and versus_text(row) == "faster"
    assert delta_text(row) == "-0.37 (-1.10 to +0.40), no measurable difference"
    assert versus_text({**row, "speedup_ci95": [0.95, 1.2]}) == "no measurable difference"
    assert versus_text({**row, "speedup_ci95": [0.5, 0.9]}) == "slower"
    bare = {"is_baseline": False, "speedup": 4.114, "vs_baseline": "no measurable difference", "score_delta": None,
            "top1_delta": -0.37}
    assert (speedup_text(bare), versus_text(bare), delta_text(bare)) == ("4.11x", "no measurable difference", "-0.37")
    assert versus_text({**bare, "is_baseline": True}) == "baseline" and delta_text({**bare, "is_baseline": True}) == ""


def test_accuracy_axis_stays_within_what_is_possible() -> None:
    from edgekit.report.plots import score_limits

    assert score_limits([99.26, 99.63, 100.0], "top1") == (pytest.approx(98.76), 100.0)
    low, high = score_limits([0.4, 30.0], "agreement")
    assert low == 0.0 and 30.0 < high < 100.0


def test_terminal_summary(run_dir: Path) -> None:
    from edgekit.report import run_summary, write_report

    write_report(run_dir)
    document = json.loads((run_dir / "report.json").read_text())
    text = run_summary(run_dir)
    lines = text.splitlines()
    assert len(lines) == 2 + len(document["rows"]) + 1 + len(document["summary"]["ship"])  # short: no report dump
    for decision in document["summary"]["ship"]:
        assert any(line.startswith("ship on ") and decision["artifact"] in line and f"{decision['p50_ms']:.3f} ms" in line
                   for line in lines)
    for row in document["rows"]:
        assert any(row["label"] in line and f"{row['latency_ms']['p50']:.3f}" in line for line in lines)
