"""Issue 14 (5, 6): boards without SFTP, several devices at once, a device inventory."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import sshd_server
from edgekit.cli import main

pytestmark = pytest.mark.ssh


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory):
    """An sshd without the SFTP subsystem, as on many boards (``server``, in conftest, has it)."""
    sshd = sshd_server.find_sshd()
    if sshd is None:
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server; .ci/run does)")
    ssh = sshd_server.SshServer(tmp_path_factory.mktemp("sshd-nosftp"), sftp=False).start(sshd)
    yield ssh
    ssh.stop()


def ssh_args(server: sshd_server.SshServer) -> list[str]:
    return ["--identity", str(server.folder / "client_key"), "--known-hosts", str(server.known_hosts),
            "--ssh-config", "/dev/null"]


def quick(device_python: str) -> list[str]:
    return ["--remote-python", device_python, "--runs", "3", "--warmup", "1"]


def closed_host(server: sshd_server.SshServer) -> str:
    return f"{server.user}@127.0.0.1:{sshd_server.free_port()}"


@pytest.mark.parametrize("sftp", [True, False])
def test_upload_uses_sftp_or_falls_back_to_exec(sftp: bool, server, bare_server, device_python: str,
                                                digits_fp32_onnx: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    ssh = server if sftp else bare_server
    out = tmp_path / "b.json"
    code = main(["bench", str(digits_fp32_onnx), "--host", ssh.host, *ssh_args(ssh), *quick(device_python),
                 "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    document = json.loads(out.read_text())
    assert document["upload"] == ("sftp" if sftp else "exec")
    assert document["results"][0]["latency_ms"]["runs"] == 3


def test_exec_upload_whose_remote_write_fails_is_one_line(bare_server, device_python: str, digits_fp32_onnx: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The artifact's bytes go to /dev/full on the device: the shell's write error, in one line."""
    from edgekit.bench.upload import ExecUploader

    put = ExecUploader.put

    async def to_full(self, local: Path, remote: str) -> None:
        await put(self, local, "/dev/full" if remote.endswith(".onnx") else remote)

    monkeypatch.setattr(ExecUploader, "put", to_full)
    code = main(["bench", str(digits_fp32_onnx), "--host", bare_server.host, *ssh_args(bare_server),
                 *quick(device_python)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"{bare_server.host}: upload of /dev/full failed" in err and "No space left on device" in err, err


def test_two_hosts_one_unreachable(server, bare_server, device_python: str, digits_fp32_onnx: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Both devices at once; the unreachable one is one line and a failed document, the other measures; exit 1."""
    dead = closed_host(server)
    out = tmp_path / "out"
    code = main(["bench", str(digits_fp32_onnx), "--host", bare_server.host, "--host", dead, *ssh_args(bare_server),
                 *quick(device_python), "--out-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith(f"edgekit: error: {dead}: unreachable"), captured.err
    assert bare_server.host in captured.out and "digits.onnx" in captured.out
    documents = {d["host"]: d for d in (json.loads(p.read_text()) for p in out.glob("*.json"))}
    assert documents[bare_server.host]["results"][0]["artifact"] == "digits.onnx"
    assert documents[dead]["results"] == [] and "unreachable" in documents[dead]["error"]


def test_several_hosts_and_one_json_file_is_bad_input(server, digits_fp32_onnx: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", str(digits_fp32_onnx), "--host", server.host, "--host", closed_host(server),
                 "--json", str(tmp_path / "b.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--out-dir" in err, err


def write_inventory(path: Path, server: sshd_server.SshServer, device_python: str, **extra: object) -> Path:
    (path.parent / "keys").mkdir(exist_ok=True)
    (path.parent / "keys" / "lab_key").write_bytes((server.folder / "client_key").read_bytes())
    (path.parent / "keys" / "lab_key").chmod(0o600)
    device = {"name": "lab", "host": server.host, "target": "x86-64-avx2", "python": device_python,
              "known_hosts": str(server.known_hosts), "identity": "keys/lab_key", **extra}
    path.write_text(yaml.safe_dump({"devices": [device]}))
    return path


def test_inventory_names_a_device(bare_server, device_python: str, digits_fp32_onnx: Path, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """--host lab: host, target, Python and key (relative to the file) come from the inventory;
    EDGEKIT_INVENTORY works as --inventory."""
    inventory = write_inventory(tmp_path / "devices.yaml", bare_server, device_python)
    out = tmp_path / "b.json"
    monkeypatch.setenv("EDGEKIT_INVENTORY", str(inventory))
    code = main(["bench", str(digits_fp32_onnx), "--host", "lab", "--ssh-config", "/dev/null", "--runs", "3",
                 "--warmup", "1", "--runtime", "onnxruntime", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    document = json.loads(out.read_text())
    assert document["host"] == bare_server.host and document["target"] == "x86-64-avx2"


@pytest.mark.parametrize(("extra", "key"), [({"pyton": "python3"}, "devices.0.pyton"),
                                            ({"host": "-oProxyCommand=x"}, "devices.0.host")])
def test_bad_inventory_is_one_line(extra: dict, key: str, bare_server, device_python: str, digits_fp32_onnx: Path,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory = write_inventory(tmp_path / "devices.yaml", bare_server, device_python, **extra)
    code = main(["bench", str(digits_fp32_onnx), "--host", "lab", "--inventory", str(inventory)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{inventory}: key '{key}'" in err, err


def test_pipeline_with_one_device_unreachable(bare_server, device_python: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The run finishes: the reachable device's rows, one report line for the other, exit 1; the next
    run retries the failed device instead of reusing the failure."""
    dead = closed_host(bare_server)
    config = {
        "name": "fleet",
        "model": {"source": "edgekit.zoo:digits_cnn", "kwargs": {"width": 8}, "input_shape": [1, 3, 32, 32]},
        "data": {"recipe": "digits", "train": "builtin:digits/val", "calib": "builtin:digits/val",
                 "eval": "builtin:digits/test"},
        "train": {"epochs": 1}, "prune": None, "distill": None,
        "quantize": {"num_samples": 32, "tflite": None},
        "bench": {"targets": [], "runs": 3, "warmup": 1,
                  "hosts": [{"host": bare_server.host, "target": "x86-64-avx2", "remote_python": device_python,
                             "known_hosts": str(bare_server.known_hosts),
                             "identity": str(bare_server.folder / "client_key")},
                            {"host": dead, "target": "x86-64-avx2"}]},
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["run", str(tmp_path / "p.yaml"), "--out-dir", str(run)]) == 1
    out = capsys.readouterr().out
    report = json.loads((run / "report.json").read_text())
    assert {r["host"] for r in report["rows"]} == {f"x86-64-avx2 @ {bare_server.host}"}
    assert len(report["failures"]) == 1 and report["failures"][0]["host"] == f"x86-64-avx2 @ {dead}"
    lines = [line for line in out.splitlines() if dead in line]
    assert len(lines) == 1 and lines[0].startswith(f"not measured on x86-64-avx2 @ {dead}: {dead}: unreachable"), out
    assert f"not measured on x86-64-avx2 @ {dead}" in (run / "report.md").read_text()
    assert main(["run", str(tmp_path / "p.yaml"), "--out-dir", str(run)]) == 1
    assert "[bench] running" in capsys.readouterr().out
