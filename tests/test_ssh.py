"""Benchmarking on a "device" over SSH: a real OpenSSH server on 127.0.0.1 and a minimal device venv."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest

import device_env
import sshd_server
from edgekit.cli import main

pytestmark = pytest.mark.ssh
SSHD = sshd_server.find_sshd()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    if SSHD is None:
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server; .ci/run does)")
    ssh = sshd_server.SshServer(tmp_path_factory.mktemp("sshd")).start(SSHD)
    yield ssh
    ssh.stop()


@pytest.fixture(scope="module")
def device_python() -> str:
    return str(device_env.ensure(".venv-device"))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, digits_fp32_onnx: Path, digits_calib: np.ndarray) -> list[Path]:
    from edgekit.quantize.tflite import quantize_tflite

    out = tmp_path_factory.mktemp("ssh-artifacts") / "d.int8.tflite"
    quantize_tflite(digits_fp32_onnx, out, digits_calib[:64], write_fp32=False, progress=False)
    return [digits_fp32_onnx, out]


def remote_dirs() -> set[str]:
    return set(glob.glob("/tmp/edgekit.*"))


def ssh_args(server: sshd_server.SshServer, key: str = "client_key", known_hosts: Path | None = None) -> list[str]:
    return ["--host", server.host, "--identity", str(server.folder / key),
            "--known-hosts", str(known_hosts or server.known_hosts), "--ssh-config", "/dev/null"]


def test_bench_onnx_and_tflite_over_ssh(server, device_python: str, artifacts: list[Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    before = remote_dirs()
    out = tmp_path / "ssh.json"
    code = main(["bench", *map(str, artifacts), *ssh_args(server), "--remote-python", device_python,
                 "--runs", "20", "--warmup", "3", "--threads", "1", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads(out.read_text())
    assert document["schema"] == "edgekit.bench/1" and document["host"] == server.host
    by_name = {r["artifact"]: r for r in document["results"]}
    assert by_name["digits.onnx"]["runtime"] == "onnxruntime"
    tflite = by_name["d.int8.tflite"]
    assert tflite["runtime"] == "tflite" and tflite["runtime_package"] == "tflite_runtime"  # the board package
    assert tflite["runtime_version"].startswith("2.14")
    for result in document["results"]:
        assert result["latency_ms"]["runs"] == 20 and result["latency_ms"]["p50"] > 0
    # the device Python is the minimal venv: no edgekit, no torch
    assert ".venv-device" in device_python
    assert remote_dirs() == before, "the remote temporary directory was not removed"


def test_local_and_ssh_agree(server, device_python: str, artifacts: list[Path]) -> None:
    from edgekit.bench import benchmark

    local = benchmark([artifacts[1]], runs=60, warmup=10, threads=1, local_python=device_python)
    remote = benchmark([artifacts[1]], runs=60, warmup=10, threads=1, host=server.host, remote_python=device_python,
                       ssh_options={"identity": str(server.folder / "client_key"),
                                    "known_hosts": str(server.known_hosts), "ssh_config": "/dev/null"})
    ratio = remote["results"][0]["latency_ms"]["p50"] / local["results"][0]["latency_ms"]["p50"]
    assert 0.67 < ratio < 1.5, ratio  # same machine and interpreter; benchmarks/ reports the exact figure


def test_unknown_host_key_is_refused_then_trusted_explicitly(server, device_python: str, artifacts: list[Path],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = ["bench", str(artifacts[0]), *ssh_args(server, known_hosts=empty), "--remote-python", device_python,
            "--runs", "3", "--warmup", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{server.host}: host key refused" in err and "--trust-new-host" in err and err.count("\n") == 1
    assert main([*args, "--trust-new-host"]) == 0
    capsys.readouterr()
    assert f"[127.0.0.1]:{server.port} ssh-ed25519" in empty.read_text()
    assert main(args) == 0  # now known: checked, accepted


@pytest.mark.parametrize(("extra", "message"), [
    (["--key", "other_key"], "authentication failed"),
    (["--remote-python", "/nonexistent/python3"], "no Python 3 at '/nonexistent/python3' on the device"),
    (["--remote-python", "BARE"], "the device's Python has no onnxruntime runtime for digits.onnx; install it on the device: pip install onnxruntime"),
    (["--remote-python", "DEVICE", "--runs", "200000", "--timeout", "3"], "timed out after 3 s"),
    (["--port", "CLOSED"], "unreachable"),
])
def test_ssh_failures_are_one_line(extra: list[str], message: str, server, device_python: str, artifacts: list[Path],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    key = "client_key"
    options = list(extra)
    if options[:1] == ["--key"]:
        key = options[1]
        options = []
    args = ["bench", str(artifacts[0]), *ssh_args(server, key), "--runs", "3", "--warmup", "1"]
    if options[:1] == ["--port"]:
        args[args.index("--host") + 1] = f"{server.user}@127.0.0.1:{sshd_server.free_port()}"
        options = ["--remote-python", device_python]
    options = [device_python if o == "DEVICE" else str(device_env.ensure(".venv-device-bare")) if o == "BARE" else o
               for o in options]
    if "--remote-python" not in options:
        options += ["--remote-python", device_python]
    before = remote_dirs()
    assert main([*args, *options]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("edgekit: error: ") and err.count("\n") == 1
    assert remote_dirs() == before, "the remote temporary directory was not removed after a failure"


def test_device_runner_is_self_contained(device_python: str, artifacts: list[Path]) -> None:
    """The pushed runner imports nothing of edgekit, torch or tensorflow."""
    import subprocess

    from edgekit.bench.local import RUNNER

    for module in ("edgekit", "torch", "tensorflow"):  # cwd "/" so the checkout is not on sys.path
        assert subprocess.run([device_python, "-c", f"import {module}"], capture_output=True, cwd="/").returncode != 0
    proc = subprocess.run([device_python, str(RUNNER), str(artifacts[1]), "--runs", "3"], capture_output=True,
                          text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["results"][0]["runtime_package"] == "tflite_runtime"


def test_ssh_config_alias(server, device_python: str, artifacts: list[Path], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """An ~/.ssh/config-style alias supplies host, port, user and key."""
    config = tmp_path / "ssh_config"
    config.write_text(f"Host lab-board\n  HostName 127.0.0.1\n  Port {server.port}\n  User {server.user}\n"
                      f"  IdentityFile {server.folder / 'client_key'}\n")
    known = tmp_path / "known_hosts"
    key = (server.folder / "host_key.pub").read_text().split()
    known.write_text(f"[lab-board]:{server.port},[127.0.0.1]:{server.port} {key[0]} {key[1]}\n")
    assert main(["bench", str(artifacts[0]), "--host", "lab-board", "--ssh-config", str(config), "--known-hosts",
                 str(known), "--remote-python", device_python, "--runs", "3", "--warmup", "1"]) == 0
    assert "lab-board" in capsys.readouterr().out


def test_pipeline_benchmarks_on_a_device_too(server, device_python: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`edgekit run` with a host: the report has a row per artifact and machine."""
    import yaml

    config = {
        "name": "with-device",
        "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8}, "input_shape": [1, 3, 32, 32]},
        "data": {"recipe": "digits", "train": "builtin:digits/val", "calib": "builtin:digits/val",
                 "eval": "builtin:digits/test"},
        "train": {"epochs": 1}, "prune": None, "distill": None,
        "quantize": {"num_samples": 32, "tflite": None},
        "bench": {"targets": ["x86-64-avx2"], "runs": 5, "warmup": 1,
                  "hosts": [{"host": server.host, "target": "x86-64-avx2", "remote_python": device_python,
                             "known_hosts": str(server.known_hosts), "identity": str(server.folder / "client_key")}]},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    assert main(["run", str(tmp_path / "p.yaml"), "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    hosts = {r["host"] for r in report["rows"]}
    assert hosts == {"x86-64-avx2 @ local", f"x86-64-avx2 @ {server.host}"}
    assert len(report["rows"]) == 4  # fp32.onnx and int8.onnx on two machines
