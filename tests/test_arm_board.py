"""An ARM board in the tests: a real aarch64 Python with the ARM builds of numpy, ONNX Runtime and
tflite-runtime, run by qemu-user behind the local OpenSSH server (tests/arm_board.py). bench,
device parity and ``quantize --auto --host`` run against it, and every timing from it is marked
emulated, never shown as ARM performance."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import arm_board
import sshd_server
from edgekit.cli import main

pytestmark = [pytest.mark.ssh, pytest.mark.slow, pytest.mark.arm]


@pytest.fixture(scope="module")
def board() -> str:
    """The board's Python (built once and cached in .arm-board/); skipped, with the reason, when it cannot be built."""
    try:
        return str(arm_board.build())
    except arm_board.BoardError as exc:
        pytest.skip(f"the emulated ARM board cannot be built here: {exc}")


def board_args(server: sshd_server.SshServer, board: str) -> list[str]:
    return ["--host", server.host, "--identity", str(server.folder / "client_key"), "--known-hosts",
            str(server.known_hosts), "--ssh-config", "/dev/null", "--remote-python", board]


@pytest.fixture(scope="module")
def tflite_int8(tmp_path_factory: pytest.TempPathFactory, digits_fp32_onnx: Path, digits_calib: np.ndarray) -> Path:
    from edgekit.quantize.tflite import quantize_tflite

    out = tmp_path_factory.mktemp("arm") / "digits.int8.tflite"
    quantize_tflite(digits_fp32_onnx, out, digits_calib[:64], write_fp32=False, progress=False)
    return out


def test_bench_and_parity_on_the_arm_board_say_emulated(server, board: str, digits_fp32_onnx: Path,
                                                        tflite_int8: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run" / "bench" / "arm.json"
    out.parent.mkdir(parents=True)
    assert main(["bench", str(digits_fp32_onnx), str(tflite_int8), *board_args(server, board), "--runs", "3",
                 "--warmup", "1", "--parity", "--parity-reference", str(digits_fp32_onnx), "--parity-data",
                 "builtin:digits/val", "--recipe", "digits", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "EMULATED" in printed and "not aarch64 performance" in printed
    document = json.loads(out.read_text())
    system = document["system"]
    assert system["machine"] == "aarch64" and system["emulated"].startswith("qemu-user")
    assert {r["runtime"] for r in document["results"]} == {"onnxruntime", "tflite"}
    assert system["runtimes"]["onnxruntime"] == "1.23.0" and "tflite_runtime" in system["runtimes"]
    for result in document["results"]:  # the ARM builds compute what the x86 ones do, within INT8 rounding
        parity = result["device_parity"]
        assert parity["agrees"] and parity["host_same_artifact"]["cosine"] > 0.999, result["artifact"]
    # the report from these figures names them emulated wherever the machine is named
    assert main(["report", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert all(r["emulated"] and "EMULATED aarch64" in r["host"] for r in report["rows"])
    assert "EMULATED aarch64: not ARM speed" in (tmp_path / "run" / "report.md").read_text()


def test_quantize_auto_on_the_arm_board(server, board: str, digits_fp32_onnx: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "auto.int8.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "32", "--auto", "--no-sensitivity", "--no-remedies",
                 *board_args(server, board), "-o", str(out)]) == 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert f"measured on {server.host}" in text and "EMULATED" in text and "auto: chose" in text
    stage = json.loads(Path(f"{out}.json").read_text())["stages"][-1]
    assert "EMULATED" in stage["auto_measured_on"]


def test_the_board_command_prints_its_line_and_stops(tmp_path: Path) -> None:
    import subprocess
    import sys

    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-user-static is not installed")
    started = subprocess.run([sys.executable, str(Path(arm_board.__file__)), "start"], capture_output=True,
                             text=True, timeout=900)
    if started.returncode == 2:
        pytest.skip(started.stderr.strip())
    host, port, user, known_hosts, identity, python = started.stdout.split()
    try:
        assert host == "127.0.0.1" and Path(known_hosts).is_file() and Path(identity).is_file()
        probe = subprocess.run([python, "-c", "import platform; print(platform.machine())"], capture_output=True,
                               text=True, timeout=300)
        assert probe.stdout.strip() == "aarch64"
        assert sshd_server.wait_listening(int(port), subprocess.Popen(["sleep", "5"]), seconds=5)
    finally:
        subprocess.run([sys.executable, str(Path(arm_board.__file__)), "stop"], check=True, timeout=60)
