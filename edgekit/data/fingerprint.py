"""What a data source *is*, by content: the part of a pipeline stage's cache key that data contributes.

A stage that reads a data source must redo its work when the data changes, whatever its name.
Image folders are fingerprinted by the sorted relative paths of the files ``open_dataset`` would
read, with each file's size and sha256. Content hashes rather than sizes + mtime_ns: an edit that
keeps the size and the modification time (``cp -p``, ``rsync -a``, ``tar x``, restoring a backup,
a same-second edit on a coarse-mtime filesystem) would otherwise keep stale results, and a stale
number is the failure this exists to prevent; hashing is I/O-bound (about 1 GB/s), which for the
calibration and evaluation sets of edge models is seconds at most. ``.npy``/``.npz`` files are
hashed whole; ``builtin:digits`` is its name plus the hash of the shipped ``digits.npz``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgekit.data.datasets import IMAGE_SUFFIXES
from edgekit.errors import EdgekitError
from edgekit.manifest import sha256_file


def fingerprint(source: str | Path) -> dict[str, Any]:
    """A JSON-able description of ``source`` that changes exactly when what it yields can change."""
    text = str(source)
    if text.startswith("builtin:"):
        from edgekit.data.datasets import digits_file

        return {"builtin": text, "sha256": sha256_file(digits_file())}
    path = Path(text)
    if path.suffix.lower() in (".npy", ".npz"):
        if not path.is_file():
            raise EdgekitError(f"{path}: tensor file not found")
        return {"file": path.name, "sha256": sha256_file(path)}
    if not path.is_dir():
        raise EdgekitError(f"{path}: data folder not found")
    return _folder_fingerprint(path)


def _folder_fingerprint(root: Path) -> dict[str, Any]:
    """Relative path, size and content hash of every image file, in sorted order (labels come from paths)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0{sha256_file(file)}\n".encode())
    return {"folder_files": len(files), "sha256": digest.hexdigest()}

