"""Benchmark on a device over SSH (asyncssh): probe, upload, run under a remote timeout, clean up.

Nothing of edgekit is installed on the device: the self-contained ``device_runner`` folder is
uploaded with the artifacts into a fresh temporary directory, run by the device's own Python under
``timeout -k 5 N`` (a client-side timeout alone would leave the process running on the board), and
the directory is removed in every outcome. Host keys are checked against known_hosts; trusting a
new host is an explicit option. Every failure is one line that says what to do.
"""
from __future__ import annotations

import asyncio
import dataclasses
import getpass
import os
import shlex
from pathlib import Path
from typing import Any, Sequence

from edgekit.bench.local import RUN_MODULE, RUNNER, merge_documents, parse_runner_output, runner_arguments
from edgekit.bench.plan import Job, settle
from edgekit.bench.upload import Uploader, open_uploader
from edgekit.errors import EdgekitError, first_line
from edgekit.log import progress as progress_bar
from edgekit.runtime.registry import model_format


@dataclasses.dataclass
class SshTarget:
    host: str
    user: str | None = None
    port: int | None = None
    known_hosts: str | None = None
    trust_new_host: bool = False
    insecure_no_host_check: bool = False
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
        if port is not None and not (str(port).isdigit() and 1 <= int(port) <= 65535):
            raise EdgekitError(f"--host: {spec!r}: the port must be a number from 1 to 65535")
        if not host:
            raise EdgekitError(f"--host: {spec!r} names no host")
        if host.startswith("-") or any(c.isspace() or not c.isprintable() for c in spec):
            # no host name or alias looks like this: it is a typo, or an ssh option smuggled into a file
            raise EdgekitError(f"--host: {spec!r}: not a host name (spaces, control characters or a leading '-')")
        return cls(host=host, user=user or None, port=int(port) if port else None, **options)

    def label(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.host}{':' + str(self.port) if self.port else ''}"


async def _connect(target: SshTarget) -> Any:
    """Connect with the host key checked by :class:`HostKeys` (never by the ssh config's choice)."""
    import asyncssh

    kwargs: dict[str, Any] = {"connect_timeout": target.connect_timeout}
    if target.user:
        kwargs["username"] = target.user
    if target.port:
        kwargs["port"] = target.port
    if target.identity:
        kwargs["client_keys"] = [target.identity]
    config = _config_paths(target)
    kwargs["config"] = config
    where = target.label()
    keys = None
    if target.insecure_no_host_check:
        kwargs["known_hosts"] = None
    else:
        settings = _host_key_settings(target, config)
        keys = HostKeys(_known_hosts_files(target, settings), target.trust_new_host, settings)
        kwargs["known_hosts"] = keys  # a callable: asyncssh's own matching, our file:line diagnostics
        kwargs["client_factory"] = lambda: _host_key_client(keys)
    try:
        connection = await asyncssh.connect(target.host, **kwargs)
    except asyncssh.HostKeyNotVerifiable as exc:  # only raised when keys is set
        raise EdgekitError(f"{where}: host key refused: {keys.refusal(str(exc)) if keys else first_line(exc)}") from exc
    except asyncssh.PermissionDenied as exc:
        raise EdgekitError(f"{where}: authentication failed (no accepted key; try --identity FILE or ssh-agent)") from exc
    except (asyncio.TimeoutError, TimeoutError) as exc:
        raise EdgekitError(f"{where}: unreachable (no answer in {target.connect_timeout:.0f} s)") from exc
    except asyncssh.Error as exc:
        raise EdgekitError(f"{where}: SSH connection failed ({first_line(exc)})") from exc
    except OSError as exc:
        raise EdgekitError(f"{where}: unreachable ({exc.strerror or first_line(exc)})") from exc
    try:
        if keys is not None:
            keys.remember_new_host()
    except EdgekitError:
        connection.close()
        raise
    return connection


def _config_paths(target: SshTarget) -> list[str]:
    """--ssh-config, else ~/.ssh/config when readable (what asyncssh would read by default)."""
    if target.ssh_config:
        return [target.ssh_config]
    default = Path.home() / ".ssh" / "config"
    return [str(default)] if os.access(default, os.R_OK) else []


def _host_key_settings(target: SshTarget, config: list[str]) -> dict[str, Any]:
    """UserKnownHostsFile and StrictHostKeyChecking as the ssh config sets them for this host.
    asyncssh ignores StrictHostKeyChecking and turns checking off for UserKnownHostsFile none;
    edgekit reads both only to say so when a check fails."""
    from asyncssh.config import SSHClientConfig, SSHConfig

    class _Config(SSHClientConfig):
        _handlers = {**SSHClientConfig._handlers,
                     "stricthostkeychecking": ("StrictHostKeyChecking", SSHConfig._set_string)}

    try:
        parsed = _Config.load(None, config, False, False, False, getpass.getuser(), target.user, target.host,
                              target.port)
    except (OSError, ValueError) as exc:  # asyncssh.ConfigParseError is a ValueError
        raise EdgekitError(f"ssh config {' '.join(config)}: {first_line(exc)}") from exc
    files = parsed.get("UserKnownHostsFile")
    strict = str(parsed.get("StrictHostKeyChecking") or "").lower()
    off = []
    if files is not None and (not files or all(f == "/dev/null" for f in files)):
        off.append(f"UserKnownHostsFile {' '.join(files) or 'none'}")
    if strict in ("no", "off"):
        off.append(f"StrictHostKeyChecking {strict}")
    return {"config": " ".join(config), "files": files, "checking_off": " and ".join(off)}


def _known_hosts_files(target: SshTarget, settings: dict[str, Any]) -> list[Path]:
    """--known-hosts, else the config's UserKnownHostsFile (real files only), else ~/.ssh/known_hosts."""
    if target.known_hosts:
        return [Path(target.known_hosts).expanduser()]
    files = [Path(f).expanduser() for f in settings["files"] or () if f != "/dev/null"]
    return files or [Path.home() / ".ssh" / "known_hosts"]


@dataclasses.dataclass
class KnownHostsLine:
    """One entry of a known_hosts file, kept with its place so a message can name it."""

    path: Path
    number: int
    text: str
    entries: Any  # asyncssh.SSHKnownHosts of this one line, marker removed

    @property
    def marker(self) -> str | None:
        return self.text[1:].split(None, 1)[0] if self.text.startswith("@") else None

    def where(self) -> str:
        return f"{self.path}:{self.number}"


class HostKeys:
    """Host-key policy as OpenSSH has it: a key on record must match; only a host with no key on
    record may be trusted new (--trust-new-host); a changed or @revoked key is always refused with
    the known_hosts line to fix. Matching ([host]:port, hashed |1| entries, @cert-authority,
    @revoked) is asyncssh's own; this class only adds the file:line for the messages."""

    def __init__(self, files: list[Path], trust_new: bool, settings: dict[str, Any]) -> None:
        self.files = files
        self.trust_new = trust_new
        self.settings = settings
        self.lines = [line for path in files for line in self._read(path)]
        self.matched: list[KnownHostsLine] = []
        self.host = ""
        self.port: int | None = None
        self.offered: Any = None
        self.new_key: Any = None

    @staticmethod
    def _read(path: Path) -> list[KnownHostsLine]:
        import asyncssh

        try:
            text = path.read_text() if path.exists() else ""
        except (OSError, UnicodeDecodeError) as exc:
            raise EdgekitError(f"{path}: cannot read the known_hosts file ({first_line(exc)})") from exc
        lines = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                asyncssh.import_known_hosts(line)
                # matched without its marker: asyncssh retries a [host]:port miss without the port when
                # a line has no plain key, which would hide a lone @revoked [host]:port line
                entries = asyncssh.import_known_hosts(line.split(None, 1)[1] if line.startswith("@") else line)
            except (ValueError, IndexError) as exc:
                raise EdgekitError(f"{path}:{number}: not a known_hosts entry ({first_line(exc)}); fix or delete "
                                   "that line") from exc
            lines.append(KnownHostsLine(path, number, line, entries))
        return lines

    def __call__(self, host: str, addr: str, port: int | None) -> Any:
        """asyncssh's known_hosts callable: trusted keys, CA keys and revoked keys for this host."""
        import asyncssh

        self.host, self.port = host, port
        result = asyncssh.import_known_hosts("\n".join(line.text for line in self.lines)).match(host, addr, port)
        chosen = {key.public_data for keys in result[:3] for key in keys}
        self.matched = [line for line in self.lines
                        if any(key.public_data in chosen for key in line.entries.match(host, addr, port)[0])]
        return result

    def on_record(self) -> list[KnownHostsLine]:
        """Lines that vouch for this host (keys and CAs): with any, the host is not new."""
        return [line for line in self.matched if line.marker != "revoked"]

    def accept_unlisted(self, host: str, port: int, key: Any) -> bool:
        """asyncssh asks about a key that is neither trusted nor revoked: new host or changed key."""
        self.offered = key
        if self.trust_new and not self.on_record():
            self.new_key = (host, port, key)
            return True
        return False

    def pattern(self) -> str:
        return f"[{self.host}]:{self.port}" if self.port and self.port != 22 else self.host

    def refusal(self, reason: str) -> str:
        """One line: what is wrong with the key and which known_hosts line or command fixes it."""
        pattern, first = self.pattern(), self.files[0]
        offered = f" (the device offers {self.offered.get_fingerprint()})" if self.offered is not None else ""
        revoked = [line for line in self.matched if line.marker == "revoked"]
        if "revoked" in reason and revoked:
            return (f"the device's key is marked @revoked in {revoked[0].where()}; the device must get a new "
                    "host key")
        on_record = self.on_record()
        if on_record:
            kind = "CA key" if on_record[0].marker == "cert-authority" else "key"
            return (f"it does not match the {kind} on record for {pattern}: the key CHANGED{offered}, possibly a "
                    f"man-in-the-middle attack. Offending {kind} in {on_record[0].where()}; if the device was "
                    f"reinstalled, check its new key, then remove the old one: ssh-keygen -R '{pattern}' -f "
                    f"{on_record[0].path} (--trust-new-host never replaces a key)")
        note = ""
        if self.settings.get("checking_off"):
            note = (f"; your ssh config ({self.settings['config']}) sets {self.settings['checking_off']}, which "
                    "edgekit does not follow: pass --insecure-no-host-check to skip the check (recorded in the "
                    "result as host_key_checked: false)")
        return (f"no key on record for {pattern} in {', '.join(map(str, self.files))}{offered}; check it and add "
                f"it (ssh-keyscan{' -p ' + str(self.port) if self.port and self.port != 22 else ''} {self.host} >> "
                f"{first}), or pass --trust-new-host to record it{note}")

    def remember_new_host(self) -> None:
        """--trust-new-host on a host with no key on record: append its key, OpenSSH-style."""
        if self.new_key is None:
            return
        host, port, key = self.new_key
        path = self.files[0]
        pattern = f"[{host}]:{port}" if port and port != 22 else host
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            existing = path.read_text() if path.exists() else ""
            with open(path, "a") as handle:
                handle.write(("" if not existing or existing.endswith("\n") else "\n")
                             + f"{pattern} {key.export_public_key('openssh').decode().strip()}\n")
        except OSError as exc:
            raise EdgekitError(f"{path}: cannot record the new host key ({exc.strerror or first_line(exc)})") from exc


def _host_key_client(keys: HostKeys) -> Any:
    """An asyncssh client whose only job is to ask :class:`HostKeys` about an unlisted key."""
    import asyncssh

    class HostKeyClient(asyncssh.SSHClient):
        def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
            return keys.accept_unlisted(host, port, key)

    return HostKeyClient()


async def _run(connection: Any, command: str, timeout: float, where: str) -> Any:
    import asyncssh

    try:
        return await connection.run(command, check=False, timeout=timeout)
    except asyncssh.TimeoutError as exc:
        raise EdgekitError(f"{where}: timed out after {timeout:.0f} s") from exc
    except (asyncssh.ConnectionLost, asyncssh.DisconnectError, BrokenPipeError, ConnectionError) as exc:
        raise EdgekitError(f"{where}: connection dropped ({first_line(exc)})") from exc


MARKER = ".edgekit-owner"
PROBE_FILE = ".edgekit-probe.npy"  # the device-parity inputs, beside the artifacts (no artifact is a dot file)
# A process that lives exactly as long as this SSH connection: its pid and start time, written into
# the marker, tell a later connection whether the directory's owner is still there.
KEEPER = "echo $$ $(cut -d' ' -f22 /proc/$$/stat 2>/dev/null); exec cat >/dev/null"
# Remove edgekit.* directories whose keeper is gone (a client killed before it could clean up).
# Directories without a marker (another tool, an older edgekit, one being created) are left alone.
SWEEP = """for d in {base}/edgekit.*; do
  [ -f "$d/{marker}" ] || continue
  read pid start < "$d/{marker}" || continue
  case "$pid" in ''|*[!0-9]*) continue;; esac
  if [ -d /proc/self ]; then
    [ -n "$start" ] && [ "$(cut -d' ' -f22 /proc/$pid/stat 2>/dev/null)" = "$start" ] && continue
  else
    kill -0 "$pid" 2>/dev/null && continue
  fi
  rm -rf "$d" && echo "$d"
done
d=$(mktemp -d {base}/edgekit.XXXXXX) && echo {owner} > "$d/{marker}" && echo "created $d"
"""


async def _start_keeper(connection: Any, where: str) -> tuple[Any, str]:
    """Start the connection's keeper process; returns it and its "pid starttime" line."""
    try:
        keeper = await connection.create_process(KEEPER)
        owner = str(await asyncio.wait_for(keeper.stdout.readline(), 60)).strip()
    except Exception as exc:  # asyncssh's errors, a timeout, a dropped connection
        raise EdgekitError(f"{where}: cannot start a shell on the device ({first_line(exc)})") from exc
    if not owner.split() or not owner.split()[0].isdigit():
        raise EdgekitError(f"{where}: the device's shell did not report a process id ({owner[:100]!r})")
    return keeper, owner


async def _make_remote_dir(connection: Any, workdir: str | None, owner: str, where: str) -> tuple[str, int]:
    """Sweep stale edgekit.* directories of killed clients, then create ours with its owner marker."""
    base = shlex.quote(workdir) if workdir else "/tmp"
    script = SWEEP.format(base=base, marker=MARKER, owner=shlex.quote(owner))
    made = await _run(connection, script, 60, where)
    lines = str(made.stdout).strip().splitlines()
    if made.exit_status != 0 or not lines or not lines[-1].startswith("created "):
        raise EdgekitError(f"{where}: cannot create a temporary directory in {workdir or '/tmp'}")
    return lines[-1][len("created "):], len(lines) - 1


async def bench_remote_async(
    target: SshTarget, jobs: Sequence[Job], runs: int, warmup: int, *, time_budget: float | None = None,
    remote_python: str = "python3", workdir: str | None = None, timeout: float = 600.0, keep: bool = False,
    profile_top: int | None = None, probe_set: Path | None = None,
) -> dict[str, Any]:
    """Measure ``jobs`` on the device; the runner's JSON document plus where it ran, the jobs measured
    (in result order) and notes on runtimes skipped."""
    import asyncssh

    where = target.label()
    for job in jobs:
        if not job.path.is_file():
            raise EdgekitError(f"{job.path}: artifact not found")
    python = shlex.quote(remote_python)
    connection = await _connect(target)
    remote_dir = keeper = None
    try:
        probe = await _run(connection, f"{python} -c 'import sys; print(sys.version_info[0])'", 60, where)
        if probe.exit_status != 0 or str(probe.stdout).strip() != "3":
            raise EdgekitError(f"{where}: no Python 3 at {remote_python!r} on the device (set --remote-python)")
        keeper, owner = await _start_keeper(connection, where)
        remote_dir, swept = await _make_remote_dir(connection, workdir, owner, where)
        runner = f"cd {shlex.quote(remote_dir)} && {python} {' '.join(RUN_MODULE)}"
        uploader = await open_uploader(connection, where, remote_python)
        try:
            await _upload_runner(uploader, remote_dir)
            check = await _run(connection, f"{runner} --probe", 120, where)
            if check.exit_status != 0:
                last = (str(check.stderr).strip().splitlines() or ["?"])[-1]
                raise EdgekitError(f"{where}: the runner cannot start with {remote_python} ({last[:200]}); it needs numpy")
            available = parse_runner_output(str(check.stdout), where)["system"].get("runtimes", {})
            jobs, notes = settle(list(jobs), available, where, "the device's Python", remote=True)
            for path in _uploads(jobs):
                await uploader.put(path, f"{remote_dir}/{path.name}")
            if probe_set:
                await uploader.put(probe_set, f"{remote_dir}/{PROBE_FILE}")
        finally:
            await uploader.close()
        documents = []
        # one process each on the device too: a clean peak-memory figure
        for index, job in enumerate(progress_bar(jobs, desc=f"benchmarking on {where}", unit="artifact")):
            # the runner exits (removing the directory) if this channel closes; the last one also at the end
            cleanup = "always" if index == len(jobs) - 1 and not keep else "abort"
            args = runner_arguments([job.path.name], runs, warmup, job, time_budget, None, cleanup, profile_top,
                                    PROBE_FILE if probe_set else None)
            command = (f"cd {shlex.quote(remote_dir)} && timeout -k 5 {int(timeout)} "
                       f"{python} {' '.join(RUN_MODULE)} {' '.join(shlex.quote(a) for a in args)}")
            result = await _run(connection, command, timeout + 15, where)
            if result.exit_status in (124, 137):
                raise EdgekitError(f"{where}: the benchmark timed out after {timeout:.0f} s on the device")
            if result.exit_status not in (0, 1):
                last = (str(result.stderr).strip().splitlines() or ["no message"])[-1]
                raise EdgekitError(f"{where}: the runner failed with exit {result.exit_status} ({last[:200]})")
            documents.append(parse_runner_output(str(result.stdout), where))
        document = merge_documents(documents)
        document.update(remote_dir=remote_dir, stale_dirs_removed=swept, upload=uploader.kind,
                        host_key_checked=not target.insecure_no_host_check, jobs=jobs, notes=notes)
        return document
    except (asyncssh.Error, OSError, EOFError) as exc:  # anything SSH-side not named above: still one line
        raise EdgekitError(f"{where}: SSH failed ({type(exc).__name__}: {first_line(exc)})") from exc
    finally:
        await _clean_up(connection, remote_dir if not keep else None, keeper)


async def _upload_runner(uploader: Uploader, remote_dir: str) -> None:
    """The runner package's sources (not its __pycache__): every runtime module travels, so a new
    runtime needs no change here."""
    folder = f"{remote_dir}/{RUNNER.name}"
    await uploader.mkdir(folder)
    for source in sorted(RUNNER.glob("*.py")):
        await uploader.put(source, f"{folder}/{source.name}")


def _uploads(jobs: Sequence[Job]) -> list[Path]:
    """Each artifact once, with the files its format needs beside it (an OpenVINO IR's .bin)."""
    paths: dict[Path, None] = {}
    for job in jobs:
        paths[job.path] = None
        for suffix in model_format(job.path).companions:
            if job.path.with_suffix(suffix).is_file():
                paths[job.path.with_suffix(suffix)] = None
    return list(paths)


async def _clean_up(connection: Any, remote_dir: str | None, keeper: Any) -> None:
    """Remove the directory and end the keeper; works during cancellation (Ctrl-C) too. Closing the
    connection closes every runner's stdin, and the runner exits at once."""
    try:
        if remote_dir:
            await asyncio.wait_for(connection.run(f"rm -rf {shlex.quote(remote_dir)}", check=False), 30)
        if keeper is not None:
            keeper.close()
    except Exception:  # the connection may be gone; the runner's watchdog and the next sweep remain
        pass
    finally:
        connection.close()
