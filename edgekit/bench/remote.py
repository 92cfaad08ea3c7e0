"""Benchmark on a device over SSH (asyncssh): probe, upload, run under a remote timeout, clean up.

Nothing of edgekit is installed on the device: the self-contained ``device_runner.py`` is uploaded
with the artifacts into a fresh temporary directory, run by the device's own Python under
``timeout -k 5 N`` (a client-side timeout alone would leave the process running on the board), and
the directory is removed in every outcome. Host keys are checked against known_hosts; trusting a
new host is an explicit option. Every failure is one line that says what to do.
"""
from __future__ import annotations

import asyncio
import dataclasses
import shlex
from pathlib import Path
from typing import Any, Sequence

from edgekit.bench.local import RUNNER, merge_documents, parse_runner_output, runner_arguments
from edgekit.errors import EdgekitError, first_line

RUNTIME_PACKAGES = {
    "onnxruntime": "pip install onnxruntime",
    "tflite": "pip install ai-edge-litert (or tflite-runtime)",
}


@dataclasses.dataclass
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None
    known_hosts: str | None = None
    trust_new_host: bool = False
    identity: str | None = None
    ssh_config: str | None = None
    connect_timeout: float = 15.0

    @classmethod
    def parse(cls, spec: str, **options: Any) -> "SshTarget":
        """``user@addr[:port]``, ``addr``, ``[ipv6]:port`` or an ~/.ssh/config alias."""
        user, _, rest = spec.rpartition("@")
        host, port = rest, None
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port = tail.lstrip(":") or None
        elif rest.count(":") == 1:
            host, port = rest.split(":")
        if port is not None and not str(port).isdigit():
            raise EdgekitError(f"--host: {spec!r}: the port must be a number")
        if not host:
            raise EdgekitError(f"--host: {spec!r} names no host")
        return cls(host=host, user=user or None, port=int(port) if port else None, **options)

    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


async def _connect(target: SshTarget) -> Any:
    import asyncssh

    kwargs: dict[str, Any] = {"connect_timeout": target.connect_timeout}
    if target.user:
        kwargs["username"] = target.user
    if target.port:
        kwargs["port"] = target.port
    if target.identity:
        kwargs["client_keys"] = [target.identity]
    if target.ssh_config:
        kwargs["config"] = [target.ssh_config]
    kwargs["known_hosts"] = None if target.trust_new_host else (target.known_hosts or ())
    where = target.label()
    try:
        connection = await asyncssh.connect(target.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable as exc:
        raise EdgekitError(
            f"{where}: host key refused: not in known_hosts or changed ({first_line(exc)}); check it, add it "
            "to known_hosts (ssh-keyscan), or pass --trust-new-host"
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise EdgekitError(f"{where}: authentication failed (no accepted key; try --identity FILE or ssh-agent)") from exc
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise EdgekitError(f"{where}: unreachable (no answer in {target.connect_timeout:.0f} s)") from exc
    except asyncssh.Error as exc:
        raise EdgekitError(f"{where}: SSH connection failed ({first_line(exc)})") from exc
    except OSError as exc:
        raise EdgekitError(f"{where}: unreachable ({exc.strerror or first_line(exc)})") from exc
    if target.trust_new_host:
        _remember_host_key(target, connection)
    return connection


def _remember_host_key(target: SshTarget, connection: Any) -> None:
    """--trust-new-host: record the key, so later connections are checked against it."""
    key = connection.get_server_host_key()
    if key is None:
        return
    path = Path(target.known_hosts or Path.home() / ".ssh" / "known_hosts")
    path.parent.mkdir(parents=True, exist_ok=True)
    pattern = f"[{target.host}]:{target.port}" if target.port and target.port != 22 else target.host
    line = f"{pattern} {key.export_public_key('openssh').decode().strip()}\n"
    existing = path.read_text() if path.exists() else ""
    if line not in existing:
        with open(path, "a") as handle:
            handle.write(line)


async def _run(connection: Any, command: str, timeout: float, where: str) -> Any:
    import asyncssh

    try:
        return await connection.run(command, check=False, timeout=timeout)
    except asyncssh.TimeoutError as exc:
        raise EdgekitError(f"{where}: timed out after {timeout:.0f} s") from exc
    except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as exc:
        raise EdgekitError(f"{where}: connection dropped ({first_line(exc)})") from exc


async def bench_remote_async(
    target: SshTarget, models: Sequence[Path], runs: int, warmup: int, *, threads: int | None = None,
    runtime: str | None = None, time_budget: float | None = None, remote_python: str = "python3",
    workdir: str | None = None, timeout: float = 600.0, keep: bool = False,
) -> dict[str, Any]:
    """Measure ``models`` on the device; returns the runner's JSON document plus where it ran."""
    import asyncssh

    where = target.label()
    for model in models:
        if not Path(model).is_file():
            raise EdgekitError(f"{model}: artifact not found")
    python = shlex.quote(remote_python)
    connection = await _connect(target)
    remote_dir = None
    try:
        probe = await _run(connection, f"{python} -c 'import sys; print(sys.version_info[0])'", 60, where)
        if probe.exit_status != 0 or str(probe.stdout).strip() != "3":
            raise EdgekitError(f"{where}: no Python 3 at {remote_python!r} on the device (set --remote-python)")
        base = shlex.quote(workdir) if workdir else "/tmp"
        made = await _run(connection, f"mktemp -d {base}/edgekit.XXXXXX", 60, where)
        if made.exit_status != 0:
            raise EdgekitError(f"{where}: cannot create a temporary directory in {workdir or '/tmp'}")
        remote_dir = str(made.stdout).strip()
        try:
            async with connection.start_sftp_client() as sftp:
                await sftp.put(str(RUNNER), f"{remote_dir}/device_runner.py")
                check = await _run(connection, f"cd {shlex.quote(remote_dir)} && {python} device_runner.py --probe", 120, where)
                if check.exit_status != 0:
                    last = (str(check.stderr).strip().splitlines() or ["?"])[-1]
                    raise EdgekitError(f"{where}: the runner cannot start with {remote_python} ({last[:200]}); it needs numpy")
                available = parse_runner_output(str(check.stdout), where)["system"].get("runtimes", {})
                _require_runtimes(where, models, runtime, available)
                for model in models:
                    await sftp.put(str(model), f"{remote_dir}/{Path(model).name}")
        except (asyncssh.SFTPError, OSError) as exc:
            if isinstance(exc, EdgekitError):
                raise
            raise EdgekitError(f"{where}: upload failed ({first_line(exc)})") from exc
        documents = []
        for model in models:  # one process each on the device too: a clean peak-memory figure
            args = runner_arguments([Path(model).name], runs, warmup, threads, runtime, time_budget, None)
            command = (f"cd {shlex.quote(remote_dir)} && timeout -k 5 {int(timeout)} "
                       f"{python} device_runner.py {' '.join(shlex.quote(a) for a in args)}")
            result = await _run(connection, command, timeout + 15, where)
            if result.exit_status in (124, 137):
                raise EdgekitError(f"{where}: the benchmark timed out after {timeout:.0f} s on the device")
            if result.exit_status not in (0, 1):
                last = (str(result.stderr).strip().splitlines() or ["no message"])[-1]
                raise EdgekitError(f"{where}: the runner failed with exit {result.exit_status} ({last[:200]})")
            documents.append(parse_runner_output(str(result.stdout), where))
        document = merge_documents(documents)
        document["remote_dir"] = remote_dir
        return document
    finally:
        if remote_dir and not keep:
            try:
                await connection.run(f"rm -rf {shlex.quote(remote_dir)}", check=False, timeout=30)
            except Exception:  # the connection may be gone; nothing more can be done from here
                pass
        connection.close()


def _require_runtimes(where: str, models: Sequence[Path], runtime: str | None, available: dict[str, str]) -> None:
    has_tflite = any(k in available for k in ("ai_edge_litert", "tflite_runtime", "tensorflow"))
    for model in models:
        kind = runtime or ("onnxruntime" if str(model).endswith(".onnx") else "tflite")
        kind = "onnxruntime" if kind in ("onnxruntime", "ort", "onnx") else "tflite"
        if (kind == "onnxruntime" and "onnxruntime" not in available) or (kind == "tflite" and not has_tflite):
            raise EdgekitError(
                f"{where}: the device's Python has no {kind} runtime for {Path(model).name}; "
                f"install it on the device: {RUNTIME_PACKAGES[kind]}"
            )


def bench_remote(target: SshTarget, models: Sequence[Path], runs: int, warmup: int, **kwargs: Any) -> dict[str, Any]:
    return asyncio.run(bench_remote_async(target, models, runs, warmup, **kwargs))
