"""Deliberately broken copies of an exported ONNX graph: what the parity gate must catch.

Each function edits an ``onnx.ModelProto`` in place and returns False when the graph has no part to
break that way (no residual Add, no bias). ``benchmarks/bench_parity.py`` and the tests use them to
show the float32-noise rule still fails a wrong op, a swapped channel order, a dropped layer and a
wrong constant.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

ACTIVATIONS = ("Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Erf", "Gelu")


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def _middle(nodes: list[onnx.NodeProto]) -> onnx.NodeProto | None:
    return nodes[len(nodes) // 2] if nodes else None


def _convs(model: onnx.ModelProto, need_bias: bool = False) -> list[onnx.NodeProto]:
    """Convolutions with constant weights (and, with ``need_bias``, a bias that is not ~0: a depthwise
    convolution fed by a zero-mean BatchNorm folds to a 1e-8 bias, and 1% of that changes nothing)."""
    inits = _initializers(model)
    convs = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]
    if need_bias:
        convs = [n for n in convs if len(n.input) > 2 and n.input[2] in inits
                 and np.max(np.abs(numpy_helper.to_array(inits[n.input[2]]))) > 1e-3]
    return convs


def _edit_initializer(model: onnx.ModelProto, name: str, edit: Callable[[np.ndarray], np.ndarray]) -> None:
    tensor = _initializers(model)[name]
    tensor.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(tensor).copy()), name))


def swap_out_channels(model: onnx.ModelProto) -> bool:
    """A middle convolution's output channels 0 and 1 trade weights (a channel-order bug)."""
    conv = _middle(_convs(model))
    if conv is None:
        return False
    _edit_initializer(model, conv.input[1], lambda w: w[[1, 0, *range(2, len(w))]])
    return True


def bgr_input(model: onnx.ModelProto) -> bool:
    """The first convolution reads BGR instead of RGB (input channels 0 and 2 swapped)."""
    convs = [c for c in _convs(model) if numpy_helper.to_array(_initializers(model)[c.input[1]]).shape[1] == 3]
    if not convs:
        return False
    _edit_initializer(model, convs[0].input[1], lambda w: w[:, [2, 1, 0]])
    return True


def activation_to_identity(model: onnx.ModelProto) -> bool:
    """One middle activation (Relu, HardSwish, Erf of a GELU...) becomes Identity (a wrong op)."""
    node = _middle([n for n in model.graph.node if n.op_type in ACTIVATIONS])
    if node is None:
        return False
    node.op_type, node.domain = "Identity", ""
    del node.input[1:]
    del node.attribute[:]
    return True


def drop_residual(model: onnx.ModelProto) -> bool:
    """A middle residual Add (two computed inputs of one inferred shape) passes its first input through:
    one block's branch is dropped. Bias Adds (a vector broadcast onto a tensor) are not residuals."""
    shapes = _shapes(model)
    inits = _initializers(model)
    adds = [n for n in model.graph.node if n.op_type == "Add" and len(n.input) == 2
            and not any(i in inits for i in n.input) and shapes.get(n.input[0]) is not None
            and len(shapes[n.input[0]]) >= 3 and shapes.get(n.input[0]) == shapes.get(n.input[1])]
    node = _middle(adds)
    if node is None:
        return False
    node.op_type = "Identity"
    del node.input[1:]
    return True


def _shapes(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    """Static shapes from shape inference (edgekit saves an inferred graph); None where a dim is unknown."""
    shapes: dict[str, list[int] | None] = {}
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value for d in dims] if dims and all(d.HasField("dim_value") for d in dims) else None
    return shapes


def scale_bias(model: onnx.ModelProto) -> bool:
    """A middle convolution's bias is 1% too large (a wrong constant)."""
    conv = _middle(_convs(model, need_bias=True))
    if conv is None:
        return False
    _edit_initializer(model, conv.input[2], lambda b: (b * 1.01).astype(b.dtype))
    return True


def scale_weight(model: onnx.ModelProto) -> bool:
    """A middle convolution's weights are 0.1% too large (the subtlest wrong constant here)."""
    conv = _middle(_convs(model))
    if conv is None:
        return False
    _edit_initializer(model, conv.input[1], lambda w: (w * 1.001).astype(w.dtype))
    return True


BREAKAGES: dict[str, Callable[[onnx.ModelProto], bool]] = {
    "swap 2 conv channels": swap_out_channels, "RGB->BGR": bgr_input, "activation->Identity": activation_to_identity,
    "drop residual": drop_residual, "conv bias x1.01": scale_bias, "conv weight x1.001": scale_weight,
}
