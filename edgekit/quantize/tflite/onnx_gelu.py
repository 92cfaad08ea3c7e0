"""torch's Erf GELU, five ONNX ops, becomes the one ONNX ``Gelu`` op (opset 20) before onnx2tf reads it.

torch exports ``nn.GELU()`` as ``Mul(Mul(x, Add(Erf(Div(x, 1.4142135)), 1)), 0.5)``. onnx2tf fuses that
pattern into ``tf.nn.gelu`` itself, at the Div, and turns the Add and the two Muls into identities
whose inputs it still lays out one by one, choosing among transpositions by running its sample.
Where ``x`` is a 4-D Add (onnx2tf computes it channels-first and relies on the next op to lay it
back), that choice went wrong: FastViT-T8 (every MobileOne block sums its branches, then GELU)
converted to an FP32 TFLite at cosine 0.851 to its ONNX model, refused as a mistranslation; two such
blocks at 64 px (tests/test_tflite_rewrites.py) at 0.9896. onnx2tf's ``Gelu`` op is one element-wise
layer whose layout follows its input as ``Relu``'s does: both then converted exactly (FastViT-T8:
cosine 1.0000) and full-integer (TFLite's GELU has an int8 kernel). The fused pattern also computed
the tanh approximation (error up to 1e-4 of the values in FP32); ``Gelu`` computes the Erf form the
ONNX model has. Measured on timm's EdgeNeXt-XXS and InceptionNeXt-Atto, whose fusion was right: the
same INT8 fidelity to six digits (the two GELUs differ by less than half an int8 step).

``Gelu`` exists from opset 20: an older model is converted with ONNX's version converter first (which
also rewrites what changed between the versions, such as the Reduce ops' axes); a model it cannot
convert is left as it was, the pattern to onnx2tf's own fusion."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekit.quantize import onnx_graph

GELU_OPSET = 20
_TOLERANCE = 1e-5  # of the pattern's constants (float32 exports of sqrt(2), 1 and 0.5)


def at_gelu_opset(model: Any) -> tuple[Any, bool]:
    """``model`` converted to opset 20 where it has an Erf GELU and an older opset, and whether it was.
    Run before the other rewrites: the converter writes what it changes (the Reduce ops' axes) as
    Constant nodes, which they make initializers (converted after them, FastViT's ReduceMean reached
    TFLite as a TensorFlow op: "tf.Mean: is neither a custom op nor a flex op")."""
    from onnx import version_converter

    if _opset(model) >= GELU_OPSET or not _gelus(model.graph):
        return model, False
    try:
        return version_converter.convert_version(model, GELU_OPSET), True
    except Exception:  # noqa: BLE001 - no adapter for some op: the GELUs are left to onnx2tf's own fusion
        return model, False


def erf_gelus_as_gelu_ops(model: Any) -> bool:
    """Every Erf GELU of an opset-20 ``model`` becomes one ``Gelu`` op, in place; whether any did."""
    from onnx import helper

    if _opset(model) < GELU_OPSET:
        return False
    graph = model.graph
    gelus = _gelus(graph)  # kept while ``replaced`` is read: its keys are the ids of these node objects
    replaced: dict[int, Any] = {}
    for x, nodes in gelus:
        replaced.update({id(n): None for n in nodes})
        replaced[id(nodes[0])] = helper.make_node("Gelu", [x], [nodes[-1].output[0]], name=f"{nodes[0].name}_gelu")
    kept = [replaced.get(id(n), n) for n in graph.node]
    del graph.node[:]
    graph.node.extend(n for n in kept if n is not None)
    return bool(gelus)


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _gelus(graph: Any) -> list[tuple[str, list[Any]]]:
    """(x, its five nodes in graph order) per Erf GELU whose inner tensors nothing else reads."""
    constants = _scalar_constants(graph)
    readers = onnx_graph.consumers(graph)

    def only_reader(tensor: str, op_type: str) -> Any | None:
        found = readers.get(tensor, [])
        return found[0] if len(found) == 1 and found[0].op_type == op_type else None

    def other(node: Any, tensor: str) -> str | None:
        rest = [i for i in node.input if i != tensor]
        return rest[0] if len(node.input) == 2 and len(rest) == 1 else None

    def is_constant(name: str | None, value: float) -> bool:
        return name in constants and abs(constants[name] - value) <= _TOLERANCE

    found = []
    for scale in graph.node:
        if not (len(scale.input) == 2 and (scale.op_type == "Div" and is_constant(scale.input[1], math.sqrt(2))
                                            or scale.op_type == "Mul" and is_constant(other(scale, scale.input[0]),
                                                                                      math.sqrt(0.5)))):
            continue
        x = scale.input[0]
        erf = only_reader(scale.output[0], "Erf")
        plus_one = erf and only_reader(erf.output[0], "Add")
        if not plus_one or not is_constant(other(plus_one, erf.output[0]), 1.0):
            continue
        first = only_reader(plus_one.output[0], "Mul")
        second = first and only_reader(first.output[0], "Mul")
        if not second:
            continue
        halves = (other(first, plus_one.output[0]) == x and is_constant(other(second, first.output[0]), 0.5)
                  or is_constant(other(first, plus_one.output[0]), 0.5) and other(second, first.output[0]) == x)
        if halves:
            found.append((x, [scale, erf, plus_one, first, second]))
    return found


def _scalar_constants(graph: Any) -> dict[str, float]:
    """One-element float initializers and Constant outputs, as floats."""
    from onnx import numpy_helper

    tensors = [(i.name, i) for i in graph.initializer]
    tensors += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    values = {}
    for name, tensor in tensors:
        if int(np.prod(tensor.dims)) == 1 and tensor.data_type in (1, 10, 11):  # float, float16, double
            values[name] = float(numpy_helper.to_array(tensor).reshape(-1)[0])
    return values
