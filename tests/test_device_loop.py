"""The target in the loop: ``quantize --auto`` measured on the device, device parity over SSH (a wrong
artifact shows as disagreement), and the pipeline's device rows carrying parity. A real OpenSSH
server on 127.0.0.1 and the board-like device venv (tests/device_env.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import sshd_server
from edgekit.cli import main

pytestmark = pytest.mark.ssh


def ssh_args(server: sshd_server.SshServer, device_python: str) -> list[str]:
    return ["--host", server.host, "--identity", str(server.folder / "client_key"), "--known-hosts",
            str(server.known_hosts), "--ssh-config", "/dev/null", "--remote-python", device_python]


def scaled_input(model_path: Path, out: Path, scale: float) -> Path:
    """The same model with its input multiplied by ``scale`` first: a wrong preprocessing baked in."""
    model = onnx.load(model_path)
    graph = model.graph
    name = graph.input[0].name
    graph.initializer.append(onnx.numpy_helper.from_array(np.array(scale, np.float32), "edgekit_test_scale"))
    for node in graph.node:
        node.input[:] = ["edgekit_test_scaled" if i == name else i for i in node.input]
    graph.node.insert(0, helper.make_node("Mul", [name, "edgekit_test_scale"], ["edgekit_test_scaled"]))
    onnx.save(model, out)
    return out


@pytest.mark.slow
def test_quantize_auto_chooses_by_the_device_measurements(server, device_python: str, digits_fp32_onnx: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auto.int8.onnx"
    common = ["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--calib", "builtin:digits/train",
              "--recipe", "digits", "--num-samples", "32", "--auto", "--no-sensitivity", "--no-remedies"]
    assert main([*common, *ssh_args(server, device_python), "-o", str(out)]) == 0
    text = capsys.readouterr()
    said = text.out + text.err
    assert f"measured on {server.host}" in said and "the choice holds for that device" in said
    assert "auto: chose" in said and "fastest on the device" in said
    stage = json.loads(Path(f"{out}.json").read_text())["stages"][-1]
    assert server.host in stage["auto_measured_on"]
    assert len([r for r in stage["auto"] if "p50_ms" in r]) >= 4  # FP32 and the candidates, timed there
    # without a device the choice is said to hold for this machine only
    assert main([*common, "-o", str(tmp_path / "here.int8.onnx")]) == 0
    text = capsys.readouterr()
    assert "holds for this machine only" in text.out + text.err
    # --host without --auto: refused in one line
    assert main([*common[:-3], *ssh_args(server, device_python), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--host: only --auto" in capsys.readouterr().err


def test_device_parity_over_ssh_shows_a_wrong_artifact(server, device_python: str, digits_fp32_onnx: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = scaled_input(digits_fp32_onnx, tmp_path / "wrong-scale.onnx", 0.25)
    out = tmp_path / "parity.json"
    assert main(["bench", str(digits_fp32_onnx), str(wrong), *ssh_args(server, device_python), "--runs", "3",
                 "--warmup", "1", "--parity", "--parity-reference", str(digits_fp32_onnx), "--parity-data",
                 "builtin:digits/val", "--recipe", "digits", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "device parity on" in printed and "DIFFERS" in printed
    results = {r["artifact"]: r["device_parity"] for r in json.loads(out.read_text())["results"]}
    right, bad = results[digits_fp32_onnx.name], results[wrong.name]
    assert right["agrees"] and right["cosine"] > 0.9999 and right["inputs"] == "real samples"
    assert right["device"] == server.host and right["host_same_artifact"]["cosine"] > 0.9999
    assert not bad["agrees"] and bad["top1_agreement"] < 90  # the wrong input scale, seen on the device
    assert bad["host_same_artifact"]["agrees"]  # ... and it is the artifact, not the device


def test_pipeline_rows_on_a_device_carry_parity(server, device_python: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    config = {
        "name": "parity", "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8},
                                    "input_shape": [1, 3, 32, 32]},
        "data": {"recipe": "digits", "train": "builtin:digits/val", "calib": "builtin:digits/val",
                 "eval": "builtin:digits/test"},
        "train": {"epochs": 1}, "prune": None, "distill": None, "quantize": {"num_samples": 32, "tflite": None},
        "bench": {"targets": [], "runs": 3, "warmup": 1,
                  "hosts": [{"host": server.host, "remote_python": device_python, "known_hosts": str(server.known_hosts),
                             "identity": str(server.folder / "client_key")}]},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "p.yaml"), "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "run" / "report.json").read_text())["rows"]
    assert {r["artifact"] for r in rows} == {"fp32.onnx", "int8.onnx"}
    for row in rows:
        parity = row["device_parity"]
        assert parity["device"] == server.host and parity["host_same_artifact"]["cosine"] > 0.999, row
        assert parity["cosine"] > 0.99 and parity["reference"].startswith("fp32.onnx")
    html = (tmp_path / "run" / "report.html").read_text()
    assert "device parity: cos (agree) vs FP32 | vs host" in html


def test_an_artifact_the_device_cannot_run_is_its_own_line(server, device_python: str, digits_fp32_onnx: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The board's tflite-runtime 2.14 has no FULLY_CONNECTED v12, which TF 2.19's dynamic-range converter
    writes: that artifact is one line, the others are measured, exit 1 (found running the demo on it)."""
    dynamic = tmp_path / "digits.dynamic.tflite"
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "tflite", "--mode", "dynamic", "-o", str(dynamic)]) == 0
    capsys.readouterr()
    out = tmp_path / "partial.json"
    assert main(["bench", str(digits_fp32_onnx), str(dynamic), *ssh_args(server, device_python), "--runs", "3",
                 "--warmup", "1", "--json", str(out)]) == 1
    said = capsys.readouterr()
    assert f"{dynamic.name} could not be run on {server.host} with tflite" in said.out + said.err
    document = json.loads(out.read_text())
    assert [r["artifact"] for r in document["results"]] == [digits_fp32_onnx.name]
    assert document["failed"][0]["artifact"] == dynamic.name and "FULLY_CONNECTED" in document["failed"][0]["error"]
