"""Reading an ONNX graph's structure, shared by the quantization backends' graph rewrites and checks."""

from __future__ import annotations

import math
from typing import Any


def consumers(graph: Any) -> dict[str, list[Any]]:
    """Tensor name -> the nodes that read it, in graph order: what a rewrite checks before it
    removes or replaces the node that writes the tensor."""
    found: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def drop_unused_initializers(graph: Any) -> None:
    """Remove the initializers no node or output reads (left behind by a rewrite: ONNX Runtime warns
    of each one when it opens the model)."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    if len(kept) < len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


INFERENCE_KEEPS = 1024  # elements: larger initializers are shapes only for shape inference (shapes_only)


def static_shapes(model: Any) -> dict[str, list[int]] | None:
    """Each tensor's shape where shape inference knows every dimension (None where inference fails)."""
    inferred = inferred_graph(model)
    if inferred is None:
        return None
    static: dict[str, list[int]] = {}
    for info in [*inferred.value_info, *inferred.input, *inferred.output]:
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in info.type.tensor_type.shape.dim]
        if info.type.tensor_type.HasField("shape") and all(d > 0 for d in dims):
            static[info.name] = dims
    return static


def inferred_graph(model: Any) -> Any | None:
    """The graph with ONNX's inferred shapes (over :func:`shapes_only`), or None where inference fails."""
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(shapes_only(model)).graph
    except Exception:  # noqa: BLE001 - callers go on without shapes
        return None


def shapes_only(model: Any) -> Any:
    """The model with each initializer over ``INFERENCE_KEEPS`` elements declared as an input of its
    type and shape: what shape inference needs (the small ones carry the shape arithmetic's values),
    without serialising every weight once per round (Swin-S: 53 rounds of a 200 MB model)."""
    from onnx import helper

    graph = model.graph
    declared = {i.name for i in graph.input}
    small = [i for i in graph.initializer if math.prod(i.dims) <= INFERENCE_KEEPS]
    large = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in graph.initializer
             if math.prod(i.dims) > INFERENCE_KEEPS and i.name not in declared]
    light = helper.make_graph(list(graph.node), graph.name, [*graph.input, *large], list(graph.output), small,
                              value_info=list(graph.value_info))
    return helper.make_model(light, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                             functions=list(model.functions))
