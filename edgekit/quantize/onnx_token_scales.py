"""A transformer's constant-token rows scaled up in its residual stream, where they are small.

After :mod:`edgekit.quantize.onnx_tokens`, a ViT's class token no longer reaches the first LayerNorm
through the shared int8 scale, but the residual stream still carries it: each block adds its
attention and MLP outputs to ``x`` and normalizes ``x`` again. Row 0 of ``x`` starts at the class
token and grows block by block; in a random ViT-B/32 at 128 px its RMS was 0.19 after the first
attention and 0.51 after the first MLP, where the patch rows had 1.56-1.63 and the tensor's range
was +-7. One int8 scale for the tensor left that row with ~8% rounding noise, which LayerNorm passes
on unchanged (it is scale-invariant) and the head reads: full-integer TFLite logits at cosine 0.973.

So each stream tensor ``x_l`` is carried as ``D_l x_l``, ``D_l`` a per-row factor (a power of 2,
measured on the calibration images: as large as brings the small rows' RMS up to the median row's
while their peak stays inside the tensor's range; 1 for the image rows). The residual Add becomes
``x'_{l+1} = (D_{l+1} / D_l) x'_l + D_{l+1} branch_l``: a Mul by a constant on each side, only where
a factor is not 1. LayerNorm reads ``D_l x_l`` as it read ``x_l``: ``LN(k x) = LN(x)`` up to its
epsilon, whose weight in the row changes by at most ``eps / var`` (1e-6 / 0.036 for that row), far
under an int8 step. Any other reader gets ``x_l`` back through a Mul by ``1 / D_l``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.quantize import onnx_graph

MAX_FACTOR = 64  # no row scaled further (a power of 2: exact in float)
LAST_AXES = (-1, 2)  # of a [batch, tokens, features] stream tensor


@dataclass
class _Step:
    """One stream tensor and the residual Add that writes the next one."""

    tensor: str
    add: Any | None  # None for the last tensor of the stream


def scale_constant_token_rows(model: Any, start: str, rows: list[int], calibration: np.ndarray) -> bool:
    """Carry the residual stream that begins at ``start`` with its ``rows`` scaled as above (factors
    measured by running ``model`` on ``calibration``, NCHW images). Whether anything changed."""
    steps = _stream(model.graph, start)
    if len(steps) < 2:
        return False
    factors = _factors(model, [s.tensor for s in steps], rows, calibration)
    if factors is None or not any(np.any(f != 1) for f in factors):
        return False
    if not _scale_concat_constants(model.graph, steps[0].tensor, factors[0]):
        factors[0] = np.ones_like(factors[0])
    _rewrite(model.graph, steps, factors)
    return True


def _stream(graph: Any, start: str) -> list[_Step]:
    """The residual stream from ``start``: each tensor is read by LayerNorms, at most one Add of two
    runtime tensors (the residual, which writes the next) and other ops; it ends at a tensor with no
    such Add, or one that is a graph output."""
    consumers = onnx_graph.consumers(graph)
    constants = {i.name for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    steps, tensor, seen = [], start, set()
    while tensor not in seen:
        seen.add(tensor)
        if tensor in outputs:
            return []  # an output must keep its values: not rewritten
        adds = [n for n in consumers.get(tensor, []) if n.op_type == "Add" and not set(n.input) & constants
                and len(n.input) == 2 and n.input[0] != n.input[1]]
        steps.append(_Step(tensor, adds[0] if len(adds) == 1 else None))
        if len(adds) != 1:
            break
        tensor = adds[0].output[0]
    return steps


def _factors(model: Any, tensors: list[str], rows: list[int], calibration: np.ndarray) -> list[np.ndarray] | None:
    """Per stream tensor, the [T] row factors (see the module's docstring), from ONNX Runtime's float
    run of ``model`` with those tensors as outputs; None where it cannot run."""
    import onnx
    import onnxruntime as ort

    outputs = list(model.graph.output)  # the tensors become outputs for one float run, then are put back
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in tensors)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the probe keeps the rewrites' unused initializers: no warning per one
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        runs = [session.run(tensors, {feed: image[None].astype(np.float32)}) for image in calibration]
    except Exception:  # noqa: BLE001 - a model ORT cannot run as probed (or over 2 GB) is converted unscaled
        return None
    finally:
        del model.graph.output[:]
        model.graph.output.extend(outputs)
    factors = []
    for index in range(len(tensors)):
        values = np.concatenate([run[index] for run in runs])  # [images, T, features]
        if values.ndim != 3:
            return None
        rms = np.sqrt(np.mean(np.square(values, dtype=np.float64), axis=(0, 2)))
        peak = np.abs(values).max(axis=(0, 2))
        typical, limit = float(np.median(rms)), float(peak.max())
        factor = np.ones(values.shape[1], np.float32)
        for row in rows:
            if rms[row] > 0 and peak[row] > 0:
                wanted = min(typical / rms[row], limit / peak[row], MAX_FACTOR)
                factor[row] = 2.0 ** np.floor(np.log2(max(wanted, 1.0)))
        factors.append(factor)
    return factors


def _rewrite(graph: Any, steps: list[_Step], factors: list[np.ndarray]) -> None:
    """Insert the Muls: on both operands of each residual Add whose factors differ from 1 (or from the
    previous tensor's), and ``1 / D`` before every reader of a scaled tensor that is not a LayerNorm
    or the residual Add. The first tensor is already scaled (:func:`_scale_concat_constants`). Each
    stream tensor keeps its name (it now carries ``D x``); readers are rewired in place."""
    from onnx import helper, numpy_helper

    consumers = onnx_graph.consumers(graph)
    before: dict[int, list[Any]] = {}  # id(node) -> nodes inserted before it

    def mul(tensor: str, factor: np.ndarray, name: str) -> Any:
        graph.initializer.append(numpy_helper.from_array(factor.reshape(1, -1, 1).astype(np.float32), name))
        return helper.make_node("Mul", [tensor, name], [f"{name}_out"], name=name)

    for index, step in enumerate(steps):
        factor = factors[index]
        if np.any(factor != 1):
            for reader in consumers.get(step.tensor, []):
                if reader is step.add or normalizes_rows(reader):
                    continue
                node = mul(step.tensor, 1.0 / factor, f"{step.tensor}_token_unscale_{reader.name or reader.output[0]}")
                before.setdefault(id(reader), []).append(node)
                reader.input[:] = [node.output[0] if name == step.tensor else name for name in reader.input]
        if step.add is None:
            continue
        following, stream_slot = factors[index + 1], list(step.add.input).index(step.tensor)
        rescales = [(stream_slot, following / factor, "rescale"), (1 - stream_slot, following, "scale")]
        for slot, by, kind in rescales:
            if np.any(by != 1):
                node = mul(step.add.input[slot], by, f"{step.add.output[0]}_token_{kind}")
                before.setdefault(id(step.add), []).append(node)
                step.add.input[slot] = node.output[0]
    nodes = [new for node in graph.node for new in [*before.get(id(node), []), node]]
    del graph.node[:]
    graph.node.extend(nodes)


def _scale_concat_constants(graph: Any, tensor: str, factor: np.ndarray) -> bool:
    """Multiply the constant inputs of the Concat that writes ``tensor`` by their rows of ``factor``: the
    first stream tensor is scaled before it is ever quantized (a Mul after it would quantize the small
    rows first). False, and nothing changed, unless that Concat has exactly one runtime input (whose
    rows are then the rest)."""
    from onnx import numpy_helper

    writer = next((n for n in graph.node if tensor in n.output), None)
    initializers = {i.name: i for i in graph.initializer}
    if writer is None or writer.op_type != "Concat" or sum(n not in initializers for n in writer.input) != 1:
        return False
    constant_rows = sum(initializers[n].dims[1] for n in writer.input if n in initializers)
    start = 0
    for name in writer.input:
        if name not in initializers:
            start += factor.size - constant_rows
            continue
        value = numpy_helper.to_array(initializers[name])
        rows = factor[start:start + value.shape[1]].reshape(1, -1, 1)
        initializers[name].CopyFrom(numpy_helper.from_array((value * rows).astype(value.dtype), name))
        start += value.shape[1]
    return True


def normalizes_rows(node: Any) -> bool:
    """A LayerNorm over each token's features alone: it reads a row scaled by k as it read the row."""
    axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
    return node.op_type == "LayerNormalization" and axis in LAST_AXES
