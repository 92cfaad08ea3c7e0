"""Write artifacts so that a crash or an error never leaves a half-written file behind.

Every artifact goes to a temporary name in the destination's folder and is renamed into place
only when complete (rename is atomic on one filesystem). An existing file is replaced only when
the user said ``--force``.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgekit.errors import EdgekitError


def check_can_write(path: str | os.PathLike[str], force: bool) -> Path:
    """Fail early, before any work, when ``path`` exists and ``force`` is not set."""
    target = Path(path)
    if target.exists() and not force:
        raise EdgekitError(f"{target}: already exists (use --force to overwrite)")
    if target.is_dir():
        raise EdgekitError(f"{target}: is a directory, expected a file path")
    return target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    target = check_can_write(path, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise EdgekitError(f"{target}: nothing was written")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual permissions
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory (a SavedModel, a run folder)."""
    target = Path(path)
    if target.exists() and not force:
        raise EdgekitError(f"{target}: already exists (use --force to overwrite)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str, force: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"), force)
