"""``bench --profile``: per-operator time from real ONNX Runtime (and OpenVINO) sessions on the digits
model, TFLite saying it has none, the report's table beside the INT8 error, and bad profiles."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.cli import main
from edgekit.report.profile_table import base_name
from run_dirs import build_run
from test_ssh import ssh_args  # the server and device_python fixtures are conftest.py's

TOP = 5


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, digits_fp32_onnx: Path, digits_calib: np.ndarray) -> Path:
    """A run directory: FP32, QDQ INT8 (with its sensitivity ranking) and TFLite INT8, bench --profile'd."""
    return build_run(tmp_path_factory.mktemp("profiled-run"), digits_fp32_onnx, digits_calib, sensitivity=True,
                     evaluate=False, runs=40, warmup=5, threads=1, profile_top=TOP)


def names_of(path: Path) -> tuple[set[str], set[str]]:
    import onnx

    model = onnx.load(str(path))
    return {n.name for n in model.graph.node}, {t for n in model.graph.node for t in n.output}


def results(run_dir: Path) -> dict[str, dict]:
    return {r["artifact"]: r for r in json.loads((run_dir / "bench" / "local.json").read_text())["results"]}


def check_profile(profile: dict, p50: float) -> None:
    """Shape and arithmetic every available profile must have."""
    assert profile["available"] and profile["reason"] is None and profile["runs"] == 40
    ops = profile["ops"]
    assert len(ops) == TOP + 1 and ops[-1]["other"] and ops[-1]["nodes"] == profile["nodes"] - TOP
    assert sum(op["share"] for op in ops) == pytest.approx(1.0, abs=1e-3)
    named = [op["total_ms"] for op in ops[:-1]]
    assert named == sorted(named, reverse=True) and min(named) > 0
    for op in ops:
        assert op["mean_ms"] == pytest.approx(op["total_ms"] / profile["runs"], rel=1e-3, abs=1e-4)
    # the median summed kernel time is what an inference costs: within a loaded 2-core machine's reach of p50
    assert 0.2 * p50 < profile["kernel_ms_p50"] < 5 * p50


def test_onnxruntime_profiles_name_the_models_own_layers(run_dir: Path) -> None:
    by_name = results(run_dir)
    fp32, int8 = by_name["fp32.onnx"], by_name["int8.onnx"]
    check_profile(fp32["profile"], fp32["latency_ms"]["p50"])
    check_profile(int8["profile"], int8["latency_ms"]["p50"])
    nodes, tensors = names_of(run_dir / "artifacts" / "fp32.onnx")
    # FP32: ORT's NCHWc pass names a fused Conv(+Relu) after its output tensor; Conv dominates this CNN
    top_fp32 = fp32["profile"]["ops"][:3]
    assert all(base_name(op["node"]) in nodes | tensors for op in top_fp32), top_fp32
    assert top_fp32[0]["op_type"] == "Conv" and all(op["provider"] == "CPUExecutionProvider" for op in top_fp32)
    # INT8: QDQ fusion keeps the node name (+ _token_N) and runs QLinearConv kernels
    int8_nodes, _ = names_of(run_dir / "artifacts" / "int8.onnx")
    top_int8 = int8["profile"]["ops"][:3]
    assert all(base_name(op["node"]) in int8_nodes for op in top_int8), top_int8
    assert "QLinearConv" in {op["op_type"] for op in top_int8}


def test_tflite_says_it_has_no_op_profiler(run_dir: Path) -> None:
    profile = results(run_dir)["int8.tflite"]["profile"]
    assert profile == {"available": False, "reason": profile["reason"], "runs": 0, "ops": []}
    assert "no per-operator timing" in profile["reason"]


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")
def test_openvino_profile(digits_fp32_onnx: Path) -> None:
    from edgekit.bench import benchmark

    result = benchmark([digits_fp32_onnx], runs=20, warmup=3, threads=1, runtime="openvino",
                       profile_top=3)["results"][0]
    profile = result["profile"]
    assert profile["available"] and len(profile["ops"]) == 4
    assert sum(op["share"] for op in profile["ops"]) == pytest.approx(1.0, abs=1e-3)
    nodes, tensors = names_of(digits_fp32_onnx)
    # OpenVINO names a layer after the model's node (+ /WithoutBiases), or after the graph output it feeds
    assert all(base_name(op["node"]) in nodes | tensors for op in profile["ops"][:-1]), profile["ops"]
    assert any(op["op_type"].startswith("Convolution") for op in profile["ops"][:-1])


def test_report_shows_slowest_layers_beside_int8_error(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(run_dir)]) == 0
    rows = {r["artifact"]: r for r in json.loads((run_dir / "report.json").read_text())["rows"]}
    int8_ops = rows["int8.onnx"]["profile"]["ops"]
    joined = [op for op in int8_ops if op.get("sqnr_db") is not None]
    assert joined, int8_ops  # the slowest INT8 layers carry their recorded SQNR
    sensitivity = {r["tensor"]: r["sqnr_db"] for r in rows["int8.onnx"]["quantize_sensitivity"]}
    assert all(sensitivity[op["sqnr_tensor"]] == op["sqnr_db"] for op in joined)
    markdown = (run_dir / "report.md").read_text()
    section = markdown[markdown.index("## Slowest layers"):markdown.index("## Machines")]
    assert section.count("### ") == 3 and "INT8 SQNR dB" in section
    assert base_name(int8_ops[0]["node"]) in section or int8_ops[0]["node"] in section
    assert "not available: " in section and "int8.tflite" in section
    page = (run_dir / "report.html").read_text()
    assert "<h2>Slowest layers</h2>" in page and page.count("<h3>") == 3


def test_malformed_profile_is_one_line(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    path = broken / "bench" / "local.json"
    document = json.loads(path.read_text())
    document["results"][0]["profile"]["ops"][1]["share"] = "a lot"
    path.write_text(json.dumps(document))
    assert main(["report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "local.json: field 'results[0].profile.ops[1].share' must be a number" in err and err.count("\n") == 1
    document["results"][0]["profile"] = [1, 2]
    path.write_text(json.dumps(document))
    assert main(["report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "field 'results[0].profile' must be an object" in err and err.count("\n") == 1


@pytest.mark.ssh
def test_profile_over_ssh_prints_the_table(server, device_python: str, digits_fp32_onnx: Path,  # noqa: F811
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ssh.json"
    code = main(["bench", str(digits_fp32_onnx), *ssh_args(server), "--remote-python", device_python, "--runs", "20",
                 "--warmup", "3", "--threads", "1", "--profile", "--profile-top", "3", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    profile = json.loads(out.read_text())["results"][0]["profile"]
    assert profile["available"] and profile["runs"] == 20 and len(profile["ops"]) == 4
    assert "slowest operators: digits.onnx on onnxruntime" in captured.out
    assert profile["ops"][0]["node"] in captured.out
