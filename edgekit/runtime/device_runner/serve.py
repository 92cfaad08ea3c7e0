"""Serve one opened model over stdin/stdout, so that a caller runs it in this separate process.

edgekit's own process holds PyTorch, TensorFlow and ONNX Runtime at once; a runtime that also
brings its own thread pools and JIT kernels (OpenVINO's CPU plugin) runs there through this, so a
crash of the runtime is the child's exit status, one line for the user, never a signal that takes
edgekit down. Frames: one kind byte, an 8-byte little-endian length, the payload. The child sends
``J`` (JSON: the model's description, or ``{"error": ...}``) once opened, then answers every ``N``
(an ``.npz`` of native input tensors, ``arr_0``...) with an ``N`` of output tensors, or a ``J`` error.
End of input ends it.
"""
from __future__ import annotations

import io
import json
import struct
from typing import Any, BinaryIO, Callable

import numpy as np

from .base import Runner

HEADER = struct.Struct("<cQ")


def write_frame(stream: BinaryIO, kind: bytes, payload: bytes) -> None:
    stream.write(HEADER.pack(kind, len(payload)))
    stream.write(payload)
    stream.flush()


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """The next frame, or None at end of input."""
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    kind, size = HEADER.unpack(head)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return kind, payload


def pack_arrays(arrays: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def unpack_arrays(payload: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


def serve(open_model: Callable[[], Runner], stdin: BinaryIO, stdout: BinaryIO) -> int:
    """Open the model with ``open_model`` and answer frames until end of input."""
    try:
        runner = open_model()
    except Exception as exc:  # told to the caller, who raises it as its own
        write_frame(stdout, b"J", json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        return 1
    description: dict[str, Any] = {**runner.describe(), "package": runner.package, "version": runner.version}
    write_frame(stdout, b"J", json.dumps(description).encode())
    while (frame := read_frame(stdin)) is not None:
        try:
            outputs = runner.run(unpack_arrays(frame[1]))
            write_frame(stdout, b"N", pack_arrays([np.asarray(o) for o in outputs]))
        except Exception as exc:
            write_frame(stdout, b"J", json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
    return 0
