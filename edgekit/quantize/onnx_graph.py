"""Reading an ONNX graph's structure, shared by the quantization backends' graph rewrites and checks."""

from __future__ import annotations

from typing import Any


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order: what a rewrite checks before it
    removes or replaces the node that writes the tensor."""
    found: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found
