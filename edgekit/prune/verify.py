"""Proof that pruning survived export: the ONNX graph has exactly the torch model's channel counts."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError


def torch_weight_shapes(model: Any) -> Counter:
    import torch

    shapes = Counter(tuple(m.weight.shape) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    for m in model.modules():  # attention's packed q/k/v projection is a parameter, exported as a MatMul weight
        if isinstance(m, torch.nn.MultiheadAttention) and m.in_proj_weight is not None:
            shapes[tuple(m.in_proj_weight.shape)] += 1
    return shapes


def onnx_weight_shapes(onnx_path: str | Path) -> Counter:
    """Weight shapes of every Conv and Gemm/MatMul (transposed MatMul weights counted as [out, in])."""
    import onnx

    model = onnx.load(str(onnx_path))
    initializers = {i.name: list(i.dims) for i in model.graph.initializer}
    shapes: Counter = Counter()
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in initializers:
            shapes[tuple(initializers[node.input[1]])] += 1
        elif node.op_type == "Gemm" and node.input[1] in initializers:
            dims = initializers[node.input[1]]
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            shapes[tuple(dims if trans_b else dims[::-1])] += 1
        elif node.op_type == "MatMul" and node.input[1] in initializers and len(initializers[node.input[1]]) == 2:
            shapes[tuple(initializers[node.input[1]][::-1])] += 1
    return shapes


def check_onnx_channels(model: Any, onnx_path: str | Path) -> None:
    """Raise unless every conv/linear weight of ``model`` appears in the ONNX graph with the same shape."""
    expected, found = torch_weight_shapes(model), onnx_weight_shapes(onnx_path)
    if expected != found:
        missing = expected - found
        extra = found - expected
        raise EdgekitError(
            f"{onnx_path}: channel counts differ from the pruned model (missing {dict(missing)}, unexpected {dict(extra)})"
        )
