"""What a data source *is*, by content: the part of a pipeline stage's cache key that data contributes.

A stage that reads a data source must redo its work when the data changes, whatever its name.
Image folders are fingerprinted by the sorted relative paths of the files ``open_dataset`` would
read, with each file's size and sha256. Content hashes rather than sizes + mtime_ns: an edit that
keeps the size and the modification time (``cp -p``, ``rsync -a``, ``tar x``, restoring a backup,
a same-second edit on a coarse-mtime filesystem) would otherwise keep stale results, and a stale
number is the failure this exists to prevent; hashing is I/O-bound (about 1 GB/s), which for the
calibration and evaluation sets of edge models is seconds at most. ``.npy``/``.npz`` files are
hashed whole; ``builtin:digits`` is its name plus the hash of the shipped ``digits.npz`` (the canvas
sets add their renderer's version). Annotated sources (YOLO, COCO, segmentation folders) are the
content identity of every image *and annotation file* they read: a fixed label must invalidate too.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edgekit.data.base import DECODER_VERSION, images_under
from edgekit.errors import EdgekitError
from edgekit.manifest import sha256_file


def fingerprint(source: str | Path) -> dict[str, Any]:
    """A JSON-able description of ``source`` that changes exactly when what it yields can change."""
    text = str(source)
    if text.startswith("builtin:"):
        from edgekit.data.canvas import CANVAS_SETS, VERSION
        from edgekit.data.datasets import digits_file

        found = {"builtin": text, "sha256": sha256_file(digits_file())}
        if text[len("builtin:"):].partition("/")[0] in CANVAS_SETS:
            found["version"] = VERSION
        return found
    from edgekit.data.datasets import _split_suffix, annotated_kind

    path, split = _split_suffix(text)
    kind = annotated_kind(path)
    if kind is not None:
        return _annotated_fingerprint(text, kind)
    if path.suffix.lower() in (".npy", ".npz"):
        if not path.is_file():
            raise EdgekitError(f"{path}: tensor file not found")
        return {"file": path.name, "sha256": sha256_file(path)}
    if not path.is_dir():
        raise EdgekitError(f"{path}: data folder not found")
    return _folder_fingerprint(path)


def _folder_fingerprint(root: Path) -> dict[str, Any]:
    """Relative path, size and content hash of every image file, in sorted order (labels come from paths)."""
    files = images_under(root)
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix()}\0{file.stat().st_size}\0{sha256_file(file)}\n".encode())
    return {"folder_files": len(files), "sha256": digest.hexdigest(), "decoder": DECODER_VERSION}


def _annotated_fingerprint(source: str, kind: str) -> dict[str, Any]:
    """The dataset's own content identity over all its samples (the recipe plays no part in it)."""
    from edgekit.data.datasets import open_dataset
    from edgekit.data.recipes import Recipe

    any_stretch = Recipe(name="fingerprint", size=(1, 1), resize=None, center_crop=False, color_mode="rgb",
                         gray_to_rgb=True, interpolation="nearest", scale=1.0, mean=(0.0,), std=(1.0,))
    dataset = open_dataset(source, any_stretch)
    return {"annotated": kind, "samples": len(dataset), "sha256": dataset.identity(range(len(dataset))),
            "decoder": DECODER_VERSION}
