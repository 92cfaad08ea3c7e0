"""An emulated aarch64 board for the SSH tests: a Debian arm64 userland with the ARM wheels a
Raspberry Pi user installs, run by ``qemu-aarch64-static`` behind a local OpenSSH server.

    python tests/arm_board.py build   # (cached) .arm-board/root: Debian arm64 python3.11 + numpy, onnxruntime, tflite-runtime
    python tests/arm_board.py start   # build, start its sshd, print: HOST PORT USER KNOWN_HOSTS IDENTITY REMOTE_PYTHON
    python tests/arm_board.py stop

Nothing is registered with binfmt: the board's Python is a wrapper script that runs
``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11``, so the root needs no chroot and the
host's /proc, /sys and /tmp stay visible (ONNX Runtime reads /sys/devices/system/cpu). The
packages come from Debian's archive (``apt-get download`` of the arm64 builds, unpacked with
``dpkg-deb -x``) and PyPI (``pip download --platform ..._aarch64``). Emulated code runs about 100x
slower than native; the runner says it is emulated (``system.emulated``) and every report marks
such timings. ai-edge-litert 2.3.0 segfaults under qemu 7.2 on ``Interpreter()``; tflite-runtime
2.14.0, the package boards use, runs. A step that cannot happen (no qemu, no network) is one line
on stderr and exit 2; the tests then skip, naming it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
BOARD = ROOT_DIR / ".arm-board"
DEBS = ["python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1",
        "libstdc++6", "zlib1g", "libffi8", "libexpat1", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0",
        "libuuid1", "libncursesw6", "libtinfo6", "libreadline8", "libcrypt1", "libnsl2", "libtirpc3", "libdb5.3",
        "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libcom-err2", "libkeyutils1"]
WHEELS = ["numpy==1.26.4", "onnxruntime==1.23.0", "tflite-runtime==2.14.0"]
PLATFORMS = ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_34_aarch64"]
QEMU = "qemu-aarch64-static"


class BoardError(Exception):
    """A step that cannot be done here: its message is the one line to show."""


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps([DEBS, WHEELS, PLATFORMS]).encode()).hexdigest()[:16]


def python_wrapper() -> Path:
    return BOARD / "bin" / "python3"


def _run(command: list[str], what: str, **kwargs) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    except OSError as exc:
        raise BoardError(f"{what}: {exc.strerror or exc}") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise BoardError(f"{what} failed: {last[:300]}")
    return done


def ensure_qemu() -> str:
    """qemu-aarch64-static, installed from Debian when missing (as root)."""
    found = shutil.which(QEMU)
    if found:
        return found
    if os.geteuid() != 0:
        raise BoardError(f"{QEMU} is not installed (apt-get install qemu-user-static)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "qemu-user-static"],
         "apt-get install qemu-user-static", env=env)
    found = shutil.which(QEMU)
    if not found:
        raise BoardError(f"{QEMU}: still missing after installing qemu-user-static")
    return found


def _download_debs(folder: Path) -> None:
    """The arm64 .debs from Debian's archive (arm64 is added as a foreign architecture when missing)."""
    foreign = _run(["dpkg", "--print-foreign-architectures"], "dpkg").stdout.split()
    if "arm64" not in foreign:
        if os.geteuid() != 0:
            raise BoardError("Debian's arm64 packages need 'dpkg --add-architecture arm64' (as root)")
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        _run(["apt-get", "update", "-qq"], "apt-get update")
    try:
        _run(["apt-get", "download", *(f"{name}:arm64" for name in DEBS)], "apt-get download (arm64)", cwd=folder)
    except BoardError:  # a stale package list: refresh once
        _run(["apt-get", "update", "-qq"], "apt-get update")
        _run(["apt-get", "download", *(f"{name}:arm64" for name in DEBS)], "apt-get download (arm64)", cwd=folder)


def _download_wheels(folder: Path) -> None:
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
          "3.11", "--implementation", "cp", *platforms, "-d", str(folder), *WHEELS], "pip download (aarch64 wheels)")


def build() -> Path:
    """The board's root (cached by the recipe); returns the Python wrapper. Built into a temporary
    folder and renamed when complete: an interrupted build leaves no half board."""
    qemu = ensure_qemu()
    stamp = BOARD / "root" / ".edgekit-board"
    if stamp.is_file() and stamp.read_text().strip() == recipe_hash() and python_wrapper().is_file():
        return python_wrapper()
    work = BOARD / "build.tmp"
    shutil.rmtree(work, ignore_errors=True)
    (work / "debs").mkdir(parents=True)
    (work / "wheels").mkdir()
    os.chmod(work / "debs", 0o777)  # apt-get download drops privileges to _apt where it can
    _download_debs(work / "debs")
    _download_wheels(work / "wheels")
    root = work / "root"
    for deb in sorted((work / "debs").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    site.mkdir(parents=True, exist_ok=True)
    for wheel in sorted((work / "wheels").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    (root / ".edgekit-board").write_text(recipe_hash() + "\n")
    final = BOARD / "root"
    shutil.rmtree(final, ignore_errors=True)
    root.rename(final)
    shutil.rmtree(work, ignore_errors=True)
    wrapper = python_wrapper()
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f'#!/bin/sh\nexec {qemu} -L "{final}" "{final}/usr/bin/python3.11" "$@"\n')
    wrapper.chmod(0o755)
    check = _run([str(wrapper), "-c", "import numpy, onnxruntime, tflite_runtime.interpreter, platform; "
                                      "print(platform.machine())"], "the board's Python", timeout=300)
    if check.stdout.strip() != "aarch64":
        raise BoardError(f"the board's Python reports {check.stdout.strip()!r}, not aarch64")
    return wrapper


def start() -> str:
    """Build, start the board's own sshd (detached; state in .arm-board/ssh), return its line."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sshd_server

    python = build()
    stop()
    sshd = sshd_server.find_sshd()
    if sshd is None:
        raise BoardError("no OpenSSH server (apt-get install openssh-server)")
    folder = BOARD / "ssh"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    server = sshd_server.SshServer(folder)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege-separation dir sshd insists on
    with open(folder / "sshd.log", "ab") as log:  # detached: it outlives this command, so no pipe to us
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(server.config)], stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    (folder / "sshd.pid.edgekit").write_text(str(process.pid))
    if not sshd_server.wait_listening(server.port, process):
        raise BoardError(f"the board's sshd did not start (see {folder / 'sshd.log'})")
    line = f"127.0.0.1 {server.port} {server.user} {server.known_hosts} {folder / 'client_key'} {python}"
    (BOARD / "board.txt").write_text(line + "\n")
    return line


def stop() -> None:
    pid_file = BOARD / "ssh" / "sshd.pid.edgekit"
    if pid_file.is_file():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        except (ValueError, ProcessLookupError, PermissionError):
            pass
        pid_file.unlink()


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "start"
    try:
        if command == "build":
            print(build())
        elif command == "start":
            print(start())
        elif command == "stop":
            stop()
        else:
            print(f"usage: {Path(__file__).name} build|start|stop", file=sys.stderr)
            return 2
    except BoardError as exc:
        print(f"arm-board: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
