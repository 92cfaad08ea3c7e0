"""A real OpenSSH server on 127.0.0.1 for the SSH tests: temporary host key, client keys, config."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def find_sshd() -> str | None:
    for candidate in (*SSHD_CANDIDATES, shutil.which("sshd")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


def wait_listening(port: int, process: subprocess.Popen, seconds: float = 15.0) -> bool:
    """True once 127.0.0.1:port accepts a connection; False if ``process`` exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class SshServer:
    """``sshd -D -e -f config`` on a free high port; ``known_hosts`` and ``client_key`` for the client.
    ``sftp=False``: no SFTP subsystem, as on many boards (dropbear, a stripped sshd)."""

    def __init__(self, folder: Path, sftp: bool = True) -> None:
        self.folder = folder
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(folder / "host_key")
        self.client_key = keygen(folder / "client_key")
        self.other_key = keygen(folder / "other_key")
        (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
        os.chmod(folder / "authorized_keys", 0o600)
        host_pub = (folder / "host_key.pub").read_text().split()
        self.known_hosts = folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.config = folder / "sshd_config"
        self.config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPubkeyAuthentication yes\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"PermitRootLogin prohibit-password\nPidFile {folder / 'sshd.pid'}\n"
            + ("Subsystem sftp internal-sftp\n" if sftp else "") + "LogLevel ERROR\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, sshd: str) -> "SshServer":
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
        self.process = subprocess.Popen([sshd, "-D", "-e", "-f", str(self.config)], stderr=subprocess.PIPE)
        if wait_listening(self.port, self.process):
            return self
        if self.process.poll() is not None:
            raise RuntimeError(f"sshd exited: {self.process.stderr.read().decode()[-500:]}")
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"
