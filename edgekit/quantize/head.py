"""A detector's output tail in float when that is what keeps it faithful, chosen by measurement.

Detector heads end in arithmetic on the last convolutions' outputs: box decoding (softplus or
DFL, anchor offsets, strides), the class sigmoid, and a Concat of box coordinates (tens to
hundreds of pixels) with scores (0-1). Quantized as one tensor, the scores get a step of about
range/255 and collapse (onnxruntime #14233: YOLOv5 at zero confidence). The tail is what lies
between the graph's outputs and the last weighted layers (Conv, Gemm, MatMul with a weight); the
weighted layers themselves stay INT8. Both candidates, as configured and tail in float, are
measured with the task's own fidelity (a detector's mAP against its FP32 model) and the better
one is kept: a fixed list of ops would be wrong for some head. Both backends use :func:`choose`:
ONNX Runtime excludes the ONNX tail's nodes (:func:`output_tail`), TFLite keeps the tail's ops of
its own graph in float (:func:`edgekit.quantize.tflite.convert.output_tail_tensors`).
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable, TypeVar

import numpy as np

WEIGHTED = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
Op = TypeVar("Op")


def walk_tail(outputs: Iterable[Op], parents: Callable[[Op], Iterable[Op]], weighted: Callable[[Op], bool],
              key: Callable[[Op], Hashable]) -> dict[Hashable, Op]:
    """The ops that reach an output without passing a weighted op, walking back from ``outputs``;
    one walk for both graph formats (ONNX nodes, TFLite ops)."""
    tail: dict[Hashable, Op] = {}
    stack = list(outputs)
    while stack:
        op = stack.pop()
        if key(op) in tail or weighted(op):
            continue
        tail[key(op)] = op
        stack.extend(parents(op))
    return tail


def fixed_projection(weight: np.ndarray | None) -> bool:
    """A one-output-channel layer whose weights are evenly spaced (0, 1, ..., n-1): DFL's expectation
    over distance bins (YOLOv6/8/11, PP-YOLOE). Ultralytics freezes it; it is arithmetic of the
    decode, not a learned layer, so the tail walks on past it to the softmax it reads."""
    if weight is None or weight.ndim < 2 or weight.shape[0] != 1 or weight.size < 4:
        return False
    steps = np.diff(weight.astype(np.float64).ravel())
    return bool(steps[0] > 0 and np.allclose(steps, steps[0], rtol=1e-4, atol=1e-6))


def output_tail(model: Any) -> list[str]:
    """Names of the nodes that reach a graph output without passing a weighted layer (a fixed DFL
    projection does not count as one), in graph order."""
    from onnx import numpy_helper

    producer = {out: node for node in model.graph.node for out in node.output}
    weights = {init.name: init for init in model.graph.initializer}

    def weighted(node: Any) -> bool:
        if node.op_type not in WEIGHTED:
            return False
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        return not (node.op_type == "Conv" and weight is not None and fixed_projection(numpy_helper.to_array(weight)))

    tail = walk_tail((producer[o.name] for o in model.graph.output if o.name in producer),
                     lambda node: [producer[i] for i in node.input if i in producer], weighted, lambda node: node.name)
    return [node.name for node in model.graph.node if node.name in tail]


def choose(first: Any, tail: list[str], quantize_excluding: Callable[[list[str]], Any], measure: Callable[[Any], Any],
           log: Callable[[str], None]) -> tuple[Any, list[str], dict[str, Any]]:
    """(the INT8 file to go on with, the nodes it keeps in float, the record): as configured
    (``first``) against the tail in float, by the task's fidelity (shortfall, then agreement)."""
    path = quantize_excluding(tail)
    before, after = measure(first), measure(path)
    better = (after.shortfall(), -after.agreement, -after.cosine) < (before.shortfall(), -before.agreement, -before.cosine)
    log(f"output tail ({len(tail)} node(s): {', '.join(sorted({n.rsplit('/', 1)[-1] for n in tail})[:6])}) "
        f"in float: {before.kind} agreement {before.agreement:.1f}% -> {after.agreement:.1f}%, "
        f"cosine {before.cosine:.4f} -> {after.cosine:.4f}: {'kept in float' if better else 'INT8 as configured'}")
    record = {"tail_nodes": tail, "as_configured": before.as_dict(), "tail_in_float": after.as_dict(),
              "chosen": "tail in float" if better else "as configured"}
    return (path, tail, record) if better else (first, [], record)
