"""Proof that a converted ``.tflite`` is really full-integer. That it really runs (in a child
interpreter: a bad flatbuffer can *abort* it) is :func:`edgekit.runtime.verify.verify_tflite`
with ``invoke=True``, the check every command applies to a user's .tflite.
"""
from __future__ import annotations

from pathlib import Path


def float_ops(path: str | Path) -> list[str]:
    """Ops (other than the boundary QUANTIZE/DEQUANTIZE) that read or write float tensors."""
    from edgekit.inspect import inspect_tflite

    return inspect_tflite(path)["float_ops"]
