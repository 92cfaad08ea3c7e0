"""A transformer's image-independent tokens (a ViT's class token) normalized apart from the image's.

A ViT prepends a learned class token to its patch tokens and adds a positional embedding:
``S = Concat(token, patches) + pos``, then each block starts with ``LayerNorm(S)``. Row 0 of ``S``
is the same for every image, and small: torchvision initialises the class token to zeros and the
positional embedding at std 0.02, where the patch rows have std 1.4-1.8. Quantized to int8, the
whole tensor shares one scale (a step of 0.054 for a range of +-6.9 in a random ViT-B/32 at 128 px),
which leaves that row at cosine 0.875; LayerNorm then divides it by its own tiny deviation (up to
49x), and the head reads that token alone: the full-integer TFLite model had logit cosine 0.943
against a rounding floor of 0.9996.

The rewrite computes the same function with the constant rows kept out of that LayerNorm's input:
``LayerNorm(Concat(c, p)) = Concat(LayerNorm(c), LayerNorm(p))`` (it normalizes each row over the
last axis alone), and ``LayerNorm(c)`` of a constant is a constant, evaluated here. The positional
embedding's Add is split along the same axis so that its constant part folds into ``c``. The
residual branch still reads ``S``, whose row 0 then adds to the first block's attention output, of
the patch rows' scale. Exact in float up to rounding."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.quantize import onnx_graph
from edgekit.quantize.onnx_token_scales import normalizes_rows, scale_constant_token_rows

SEQUENCE_RANK = 3  # [batch, tokens, features]
TOKEN_SCALE_IMAGES = 16  # calibration images that measure the token rows' scales (either backend)
FLOAT = 1  # onnx.TensorProto.FLOAT: the tokens the rewrite evaluates in numpy


def constant_tokens_kept_apart(model: Any, calibration: np.ndarray | None) -> bool:
    """Both token rewrites on ``model`` (in place), for either backend: each constant-token sequence
    normalized apart, then its rows scaled in the residual stream where ``calibration`` (a few NCHW
    images) measures them small. Whether anything changed."""
    if not _may_have_constant_tokens(model.graph):  # most models: no shape inference spent on them
        return False
    sequences = constant_tokens_normalized_apart(model, onnx_graph.static_shapes(model) or {})
    for start, rows in sequences if calibration is not None else []:
        scale_constant_token_rows(model, start, rows, calibration)
    if sequences:  # the token and positional embedding, now folded into new constants
        onnx_graph.drop_unused_initializers(model.graph)
    return bool(sequences)


def _may_have_constant_tokens(graph: Any) -> bool:
    """A LayerNormalization and a Concat with a constant input: what any rewrite here needs."""
    constants = {i.name for i in graph.initializer}
    return (any(n.op_type == "LayerNormalization" for n in graph.node)
            and any(n.op_type == "Concat" and set(n.input) & constants for n in graph.node))


def constant_tokens_normalized_apart(model: Any, shapes: dict[str, list[int]]) -> list[tuple[str, list[int]]]:
    """Rewrite each ``LayerNorm(Concat(constant tokens, image tokens) [+ constant])`` as above.
    ``shapes``: each tensor's static shape (the rewrite needs the concatenated tensors' rows). Returns
    each rewritten token sequence (the Concat's output, with the positional embedding) and the rows of
    its constant tokens: where :mod:`edgekit.quantize.onnx_token_scales` starts."""
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    shapes = {**shapes, **{name: list(c.dims) for name, c in constants.items()}}
    rewritten = []
    for concat in [n for n in graph.node if n.op_type == "Concat"]:
        parts = _parts(concat, constants, shapes)
        if parts is None:
            continue
        consumers = onnx_graph.consumers(graph)
        readers = consumers.get(concat.output[0], [])
        summed, added = concat.output[0], None
        if len(readers) == 1 and readers[0].op_type == "Add":
            added = _constant_addend(readers[0], concat.output[0], constants, shapes)
            if added is not None:
                summed = readers[0].output[0]
        norms = [n for n in consumers.get(summed, []) if _constant_norm(n, constants)]
        if not norms:
            continue
        _rewrite(graph, concat, parts, readers[0] if added is not None else None, added, norms, constants, shapes)
        constants = {i.name: i for i in graph.initializer}
        rewritten.append((summed, _constant_rows(parts, shapes)))
    return rewritten


def _constant_rows(parts: list[tuple[str, bool]], shapes: dict[str, list[int]]) -> list[int]:
    rows, start = [], 0
    for name, is_constant in parts:
        count = shapes[name][1]
        rows += list(range(start, start + count)) if is_constant else []
        start += count
    return rows


def _parts(concat: Any, constants: dict[str, Any], shapes: dict[str, list[int]]) -> list[tuple[str, bool]] | None:
    """Concat's inputs as (name, is constant), where it joins rank-3 tensors along the token axis, at
    least one input is constant and one is not, and every shape is static with one batch row."""
    axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
    if axis not in (1, 1 - SEQUENCE_RANK) or any(name not in shapes for name in concat.input):
        return None
    if any(len(shapes[n]) != SEQUENCE_RANK or shapes[n][0] != 1 for n in concat.input):
        return None
    parts = [(name, name in constants) for name in concat.input]
    if any(is_constant and constants[name].data_type != FLOAT for name, is_constant in parts):
        return None
    kinds = {is_constant for _, is_constant in parts}
    return parts if kinds == {True, False} else None


def _constant_addend(add: Any, summand: str, constants: dict[str, Any], shapes: dict[str, list[int]]) -> str | None:
    """The constant that ``add`` adds to ``summand``, where it has ``summand``'s own shape (a positional
    embedding), else None."""
    other = add.input[1] if add.input[0] == summand else add.input[0]
    return other if other in constants and list(constants[other].dims) == shapes.get(summand) else None


def _constant_norm(node: Any, constants: dict[str, Any]) -> bool:
    """A LayerNormalization over each token's features, with constant scale and bias, one output."""
    return (normalizes_rows(node) and len(node.output) == 1
            and all(name in constants for name in node.input[1:] if name))


def _rewrite(graph: Any, concat: Any, parts: list[tuple[str, bool]], add: Any | None, addend: str | None, norms: list[Any], constants: dict[str, Any],
             shapes: dict[str, list[int]]) -> None:
    """Replace ``concat`` (and ``add``) by a Concat of folded constant rows and per-part Adds, and each
    of ``norms`` by a Concat of its constant rows, evaluated, and per-part LayerNorms."""
    from onnx import helper, numpy_helper

    base = concat.name or concat.output[0]
    position = numpy_helper.to_array(constants[addend]) if addend else None
    summed = add.output[0] if add is not None else concat.output[0]
    new_nodes: dict[int, list[Any]] = {id(concat): [], **({id(add): []} if add is not None else {})}
    folded: list[tuple[str, np.ndarray | None]] = []  # per part: its summed tensor's name, its value if constant
    start, emitted = 0, []
    for index, (name, is_constant) in enumerate(parts):
        rows = numpy_helper.to_array(constants[name]) if is_constant else None
        count = shapes[name][1]
        span = slice(start, start + count)
        start += count
        part = f"{base}_part{index}"
        if is_constant:
            value = rows + position[:, span] if position is not None else rows
            graph.initializer.append(numpy_helper.from_array(value.astype(rows.dtype), part))
            folded.append((part, value))
        elif position is not None:
            graph.initializer.append(numpy_helper.from_array(position[:, span], f"{part}_position"))
            emitted.append(helper.make_node("Add", [name, f"{part}_position"], [part], name=part))
            folded.append((part, None))
        else:
            folded.append((name, None))
    emitted.append(helper.make_node("Concat", [n for n, _ in folded], [summed], axis=1, name=base))
    new_nodes[id(concat)] = emitted
    for norm in norms:
        new_nodes[id(norm)] = _split_norm(graph, norm, folded, constants)
    nodes = [new for node in graph.node for new in new_nodes.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)


def _split_norm(graph: Any, norm: Any, folded: list[tuple[str, np.ndarray | None]], constants: dict[str, Any]) -> list[Any]:
    """``norm`` applied to each part: evaluated for constant parts, a LayerNormalization node each for
    runtime ones; joined by a Concat that writes ``norm``'s output."""
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in norm.attribute}
    epsilon = float(attrs.get("epsilon", 1e-5))
    scale = numpy_helper.to_array(constants[norm.input[1]])
    bias = numpy_helper.to_array(constants[norm.input[2]]) if len(norm.input) > 2 and norm.input[2] else 0.0
    base = norm.name or norm.output[0]
    nodes, names = [], []
    for index, (part, value) in enumerate(folded):
        name = f"{base}_part{index}"
        if value is not None:
            value64 = value.astype(np.float64)
            mean = value64.mean(axis=-1, keepdims=True)
            normalized = (value64 - mean) / np.sqrt(((value64 - mean) ** 2).mean(axis=-1, keepdims=True) + epsilon)
            graph.initializer.append(numpy_helper.from_array((normalized * scale + bias).astype(value.dtype), name))
        else:
            nodes.append(helper.make_node("LayerNormalization", [part, *norm.input[1:]], [name], name=name, **attrs))
        names.append(name)
    nodes.append(helper.make_node("Concat", names, list(norm.output), axis=1, name=f"{base}_joined"))
    return nodes
