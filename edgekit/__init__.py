"""edgekit: take a computer-vision model from PyTorch to an edge device, with numbers.

Data flows one way: model -> pruned model -> ONNX -> INT8 artifacts -> measurements -> report.
Heavy imports (torch, tensorflow) happen inside the functions that need them, so that
``edgekit --help`` and the device-side runner stay light.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "export", "EdgekitError"]

from edgekit.errors import EdgekitError


def export(model: Any, example_input: Any, output: str, **kwargs: Any) -> Any:
    """Export a torch module to ONNX with a parity proof (see :func:`edgekit.export.export_onnx`)."""
    from edgekit.export import export_onnx

    return export_onnx(model, example_input, output, **kwargs)
