"""Put files on a device: SFTP when the server offers it, else over an exec channel.

Many boards run dropbear, or an sshd built without the SFTP subsystem; there ``start_sftp_client``
fails with "Session request failed". The fallback needs nothing but a POSIX shell (busybox too):
``cat > FILE`` with the bytes on stdin, then the device's own Python reads the file back and
reports its size and SHA-256, so a short or corrupted write is named instead of measured.
"""
from __future__ import annotations

import hashlib
import shlex
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError, first_line

CHUNK = 1 << 16
# size and sha256 of argv[1], by the device's Python (sha256sum is missing on some busybox builds)
DIGEST = ("import hashlib,os,sys\nh=hashlib.sha256()\nf=open(sys.argv[1],'rb')\n"
          "for b in iter(lambda:f.read(65536),b''): h.update(b)\nprint(os.path.getsize(sys.argv[1]),h.hexdigest())")


class Uploader:
    """``mkdir`` and ``put`` on the device; ``kind`` ("sftp" or "exec") goes into the bench document."""

    kind = ""

    def __init__(self, connection: Any, where: str) -> None:
        self.connection = connection
        self.where = where

    async def mkdir(self, path: str) -> None:
        raise NotImplementedError

    async def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class SftpUploader(Uploader):
    kind = "sftp"

    def __init__(self, connection: Any, where: str, sftp: Any) -> None:
        super().__init__(connection, where)
        self.sftp = sftp

    async def mkdir(self, path: str) -> None:
        await self._do(self.sftp.mkdir(path), path)

    async def put(self, local: Path, remote: str) -> None:
        await self._do(self.sftp.put(str(local), remote), remote)

    async def _do(self, operation: Any, remote: str) -> None:
        import asyncssh

        try:
            await operation
        except (asyncssh.Error, OSError) as exc:
            raise EdgekitError(f"{self.where}: upload of {remote} failed ({first_line(exc)})") from exc

    async def close(self) -> None:
        self.sftp.exit()


class ExecUploader(Uploader):
    """``cat > FILE`` over an exec channel, checked by size and SHA-256 with the device's Python."""

    kind = "exec"

    def __init__(self, connection: Any, where: str, python: str) -> None:
        super().__init__(connection, where)
        self.python = python

    async def mkdir(self, path: str) -> None:
        result = await self._exec(f"mkdir {shlex.quote(path)}", None, path)
        if result.exit_status != 0:
            raise EdgekitError(f"{self.where}: cannot create {path} on the device ({_last_line(result)})")

    async def put(self, local: Path, remote: str) -> None:
        digest = hashlib.sha256()
        command = (f"cat > {shlex.quote(remote)} && {shlex.quote(self.python)} -c {shlex.quote(DIGEST)} "
                   f"{shlex.quote(remote)}")
        result = await self._exec(command, local, remote, digest)
        size = local.stat().st_size
        if result.exit_status != 0:
            raise EdgekitError(f"{self.where}: upload of {remote} failed ({_last_line(result)})")
        expected = f"{size} {digest.hexdigest()}"
        got = (result.stdout or b"").decode(errors="replace").strip()
        if got != expected:
            raise EdgekitError(f"{self.where}: upload of {remote} arrived damaged (device has {got[:80]!r}, "
                               f"sent {expected[:24]}...)")

    async def _exec(self, command: str, local: Path | None, remote: str, digest: Any = None) -> Any:
        """Run ``command`` with ``local``'s bytes streamed to its stdin; returns the completed process."""
        import asyncssh

        try:
            process = await self.connection.create_process(command, encoding=None)
            if local is not None:
                with open(local, "rb") as handle:
                    for block in iter(lambda: handle.read(CHUNK), b""):
                        digest.update(block)
                        process.stdin.write(block)
                        await process.stdin.drain()
            process.stdin.write_eof()
            return await process.wait(check=False)
        except OSError as exc:
            if local is not None and not isinstance(exc, (BrokenPipeError, ConnectionError)):
                raise EdgekitError(f"{local}: cannot read ({exc.strerror or first_line(exc)})") from exc
            raise EdgekitError(f"{self.where}: upload of {remote} failed ({first_line(exc)})") from exc
        except asyncssh.Error as exc:
            raise EdgekitError(f"{self.where}: upload of {remote} failed ({first_line(exc)})") from exc


def _last_line(result: Any) -> str:
    text = result.stderr.decode(errors="replace") if isinstance(result.stderr, bytes) else str(result.stderr or "")
    lines = text.strip().splitlines()
    return lines[-1][:200] if lines else f"exit {result.exit_status}"


async def open_uploader(connection: Any, where: str, python: str) -> Uploader:
    """SFTP when the server has the subsystem; the exec channel when it refuses it (dropbear, a
    stripped sshd: ``ChannelOpenError: Session request failed``, or an SFTP session that ends at once)."""
    import asyncssh

    try:
        sftp = await connection.start_sftp_client()
    except (asyncssh.ChannelOpenError, asyncssh.SFTPError, asyncssh.ProcessError, EOFError, OSError) as exc:
        if isinstance(exc, (ConnectionError, BrokenPipeError)):
            raise EdgekitError(f"{where}: connection dropped ({first_line(exc)})") from exc
        return ExecUploader(connection, where, python)
    return SftpUploader(connection, where, sftp)
