"""Benchmarking on a "device" over SSH: a real OpenSSH server on 127.0.0.1 and a minimal device venv."""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import device_env
import sshd_server
from edgekit.cli import main

pytestmark = pytest.mark.ssh


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


def test_openvino_over_ssh_when_the_device_has_it(server, device_python: str, artifacts: list[Path],
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A profile listing onnxruntime and openvino: a device Python with OpenVINO (this interpreter) measures
    the .onnx on both; the board venv without it on onnxruntime alone, with one note."""
    import yaml

    profiles = tmp_path / "targets"
    profiles.mkdir()
    (profiles / "ov.yaml").write_text(yaml.safe_dump({
        "name": "ov-box", "description": "this machine over SSH", "arch": "x86_64", "cores": 2, "threads": 1,
        "runtimes": ["onnxruntime", "openvino"]}))
    out = tmp_path / "ov.json"
    common = ["bench", str(artifacts[0]), *ssh_args(server), "--target", "ov-box", "--targets-dir", str(profiles),
              "--runs", "5", "--warmup", "1", "--json", str(out), "--force"]
    assert main([*common, "--remote-python", sys.executable]) == 0, capsys.readouterr().err
    document = json.loads(out.read_text())
    assert [(r["artifact"], r["runtime"]) for r in document["results"]] == [("digits.onnx", "onnxruntime"),
                                                                          ("digits.onnx", "openvino")]
    assert "openvino" in document["system"]["runtimes"] and "notes" not in document
    capsys.readouterr()
    assert main([*common, "--remote-python", device_python]) == 0
    assert f"note: openvino is not installed on {server.host} (pip install openvino)" in capsys.readouterr().out
    assert [r["runtime"] for r in json.loads(out.read_text())["results"]] == ["onnxruntime"]


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
    (["--remote-python", "DEVICE", "--runtime", "openvino"], "the device's Python has no openvino runtime for digits.onnx; install it on the device: pip install openvino"),
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


def test_device_runner_is_self_contained(device_python: str, artifacts: list[Path], tmp_path: Path) -> None:
    """The pushed runner folder, copied away from edgekit, imports nothing of edgekit, torch or tensorflow."""
    import shutil
    import subprocess

    from edgekit.bench.local import RUN_MODULE, RUNNER

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the checkout on sys.path
    for module in ("edgekit", "torch", "tensorflow"):
        assert subprocess.run([device_python, "-c", f"import {module}"], capture_output=True, cwd="/",
                              env=env).returncode != 0
    shutil.copytree(RUNNER, tmp_path / RUNNER.name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([device_python, *RUN_MODULE, str(artifacts[1]), "--runs", "3"], capture_output=True,
                          text=True, cwd=tmp_path, env=env)
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
    # fp32.onnx and int8.onnx on two machines; here also on OpenVINO (the profile lists it; the device lacks it)
    assert len(report["rows"]) == 4 + 2 * (importlib.util.find_spec("openvino") is not None)


# --- issue 10: host keys as OpenSSH checks them -------------------------------------------------------------------

def host_entry(server: sshd_server.SshServer, key_file: str = "host_key.pub", marker: str = "") -> str:
    kind, blob = (server.folder / key_file).read_text().split()[:2]
    return f"{marker + ' ' if marker else ''}[127.0.0.1]:{server.port} {kind} {blob}\n"


def bench_args(server, device_python: str, artifact: Path, known: Path) -> list[str]:
    return ["bench", str(artifact), *ssh_args(server, known_hosts=known), "--remote-python", device_python,
            "--runs", "3", "--warmup", "1"]


@pytest.mark.parametrize("hashed", [False, True])
def test_changed_host_key_is_refused_even_with_trust_new_host(hashed: bool, server, device_python: str,
                                                              digits_fp32_onnx: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The man-in-the-middle case: a key on record that differs is never replaced by --trust-new-host."""
    import subprocess

    known = tmp_path / "known_hosts"
    known.write_text("# lab boards\n" + host_entry(server, "other_key.pub"))  # line 2: a different key
    if hashed:
        subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
        assert "|1|" in known.read_text() and "127.0.0.1" not in known.read_text()
    before = known.read_text()
    line = next(n for n, text in enumerate(before.splitlines(), 1) if "ssh-ed25519" in text)
    assert main([*bench_args(server, device_python, digits_fp32_onnx, known), "--trust-new-host"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CHANGED" in err and f"Offending key in {known}:{line};" in err, err
    assert f"ssh-keygen -R '[127.0.0.1]:{server.port}' -f {known}" in err
    assert known.read_text() == before, "a changed key must not be appended"


def test_hashed_entry_is_accepted_and_not_appended(server, device_python: str, digits_fp32_onnx: Path,
                                                  tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    known = tmp_path / "known_hosts"
    known.write_text(host_entry(server))
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    before = known.read_text()
    assert main([*bench_args(server, device_python, digits_fp32_onnx, known), "--trust-new-host"]) == 0
    capsys.readouterr()
    assert known.read_text() == before, "a host with its key on record is not 'new'"


def test_revoked_host_key_is_refused(server, device_python: str, digits_fp32_onnx: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(host_entry(server) + host_entry(server, marker="@revoked"))
    assert main([*bench_args(server, device_python, digits_fp32_onnx, known), "--trust-new-host"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"marked @revoked in {known}:2" in err, err


@pytest.mark.parametrize("setting", ["UserKnownHostsFile none", "UserKnownHostsFile /dev/null\n  StrictHostKeyChecking no",
                                     "StrictHostKeyChecking no"])
def test_ssh_config_cannot_turn_host_key_checking_off(setting: str, server, device_python: str,
                                                      digits_fp32_onnx: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`UserKnownHostsFile none` made asyncssh skip the check silently; now the key is checked against
    ~/.ssh/known_hosts anyway, and skipping it takes --insecure-no-host-check, recorded in the JSON."""
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.ssh: the device is unknown
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n  {setting}\n")
    args = ["bench", str(digits_fp32_onnx), "--host", server.host, "--identity", str(server.folder / "client_key"),
            "--ssh-config", str(config), "--remote-python", device_python, "--runs", "3", "--warmup", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "host key refused: no key on record" in err, err
    for line in setting.split("\n"):
        assert " ".join(line.split()) in err
    assert "--insecure-no-host-check" in err
    out = tmp_path / "b.json"
    assert main([*args, "--insecure-no-host-check", "--json", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["host_key_checked"] is False
    assert not (tmp_path / ".ssh" / "known_hosts").exists(), "an unchecked key is not recorded"


def test_ssh_config_known_hosts_file_is_used(server, device_python: str, digits_fp32_onnx: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host 127.0.0.1\n  UserKnownHostsFile {server.known_hosts}\n")
    out = tmp_path / "b.json"
    assert main(["bench", str(digits_fp32_onnx), "--host", server.host, "--identity", str(server.folder / "client_key"),
                 "--ssh-config", str(config), "--remote-python", device_python, "--runs", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    capsys.readouterr()
    assert json.loads(out.read_text())["host_key_checked"] is True


# --- issue 10: an artifact named like an option --------------------------------------------------------------------

def test_artifact_named_like_an_option(server, device_python: str, digits_fp32_onnx: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from edgekit.bench import benchmark

    monkeypatch.chdir(tmp_path)
    shutil.copy(digits_fp32_onnx, tmp_path / "-h.onnx")
    local = benchmark(["-h.onnx"], runs=3, warmup=1, local_python=device_python)
    assert local["results"][0]["artifact"] == "-h.onnx"
    out = tmp_path / "r.json"
    assert main(["bench", "--json", str(out), *ssh_args(server), "--remote-python", device_python, "--runs", "3",
                 "--warmup", "1", "--", "-h.onnx"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert json.loads(out.read_text())["results"][0]["artifact"] == "-h.onnx"


# --- issue 10: the runner never outlives its client ----------------------------------------------------------------

def device_profile(tmp_path: Path, device_python: str) -> tuple[Path, Path]:
    """A target profile whose remote workdir is a private folder: other test runs' /tmp/edgekit.* stay out."""
    import yaml

    workdir = tmp_path / "device-tmp"
    workdir.mkdir()
    profiles = tmp_path / "targets"
    profiles.mkdir()
    (profiles / "lab.yaml").write_text(yaml.safe_dump({
        "name": "lab", "description": "this machine over SSH", "arch": "x86_64", "cores": 2, "threads": 1,
        "runtimes": ["onnxruntime", "tflite"], "ssh": {"python": device_python, "workdir": str(workdir)}}))
    return profiles, workdir


def runner_pids(workdir: Path) -> list[int]:
    """device_runner processes started in ``workdir`` (by command line or current directory)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            cwd = os.readlink(proc / "cwd") if "device_runner" in cmdline else ""
        except OSError:
            continue
        if "device_runner" in cmdline and (str(workdir) in cmdline or cwd.startswith(str(workdir))):
            pids.append(int(proc.name))
    return pids


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return bool(condition())


def start_bench(server, profiles: Path, artifact: Path, runs: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "edgekit", "bench", str(artifact), "--target", "lab", "--targets-dir",
               str(profiles), *ssh_args(server), "--runs", str(runs), "--warmup", "0"]
    import edgekit

    env = {**os.environ, "PYTHONPATH": str(Path(edgekit.__file__).resolve().parent.parent)}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_killed_client_leaves_no_runner_and_no_files(signum: int, server, device_python: str, digits_fp32_onnx: Path,
                                                     tmp_path: Path) -> None:
    profiles, workdir = device_profile(tmp_path, device_python)
    client = start_bench(server, profiles, digits_fp32_onnx, runs=1_000_000)
    try:
        assert wait_for(lambda: runner_pids(workdir), 90), client.stderr.read() if client.poll() is not None else ""
        time.sleep(1.0)
        client.send_signal(signum)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    if signum == signal.SIGINT:
        assert client.returncode == 130 and client.stderr.read().strip() == "edgekit: interrupted"
    assert wait_for(lambda: not runner_pids(workdir), 5), "the runner outlived its client"
    if signum == signal.SIGKILL:  # nothing could clean up on the client side: the runner or the next connection does
        quick = start_bench(server, profiles, digits_fp32_onnx, runs=2)
        assert quick.wait(timeout=120) == 0, quick.stderr.read()
    assert wait_for(lambda: not list(workdir.iterdir()), 5), list(workdir.iterdir())


def test_next_connection_removes_only_dead_clients_dirs(server, device_python: str, digits_fp32_onnx: Path,
                                                        tmp_path: Path) -> None:
    """A client killed during the upload leaves files; the next connection removes them, and nothing else."""
    from edgekit.bench.remote import MARKER

    profiles, workdir = device_profile(tmp_path, device_python)
    dead = subprocess.Popen(["true"])
    dead.wait()
    me = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22: start time
    layout = {"edgekit.dead01": f"{dead.pid} 1", "edgekit.live01": f"{os.getpid()} {me}", "edgekit.other1": None}
    for name, owner in layout.items():
        (workdir / name).mkdir()
        (workdir / name / "model.onnx").write_text("x")
        if owner:
            (workdir / name / MARKER).write_text(owner + "\n")
    client = start_bench(server, profiles, digits_fp32_onnx, runs=2)
    assert client.wait(timeout=120) == 0, client.stderr.read()
    assert sorted(p.name for p in workdir.iterdir()) == ["edgekit.live01", "edgekit.other1"]


def test_android_profile_promises_no_on_device_measurement() -> None:
    from edgekit.targets import load_target

    description = load_target("android-arm64").description
    assert "not yet supported" in description and "on-device" in description
