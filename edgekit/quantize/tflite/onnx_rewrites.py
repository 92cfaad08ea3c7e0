"""The ONNX graph rewritten into the same function in a form onnx2tf translates (its private copy only).

Each rewrite is exact (same outputs, bit for bit in float) and exists because onnx2tf mistranslated
the original form, measured on torch's own exports:

* ``Constant`` nodes become initializers, and float scalars read by element-wise arithmetic become
  one-element arrays. onnx2tf read a scalar ``Constant`` as a Python float, and its Div validation
  then took the float for a layer: every Erf-GELU as torch exports it (``Div(x, 1.4142135)``:
  ConvNeXt, ViT, Swin) failed with "Output tensors of a Functional model must be the output of a
  TensorFlow Layer ... Found: 1.4142135". Its GELU fusion (Div, Erf, Add, Mul, Mul -> TFLite's GELU,
  which has an int8 kernel) also recognises the divisor only as a one-element array.
* Shape arithmetic on static shapes is folded to constants (``Shape`` of a tensor whose shape is
  known, and every node computing on constants only), round after round: Swin pads each stage to
  whole windows with pads computed from ``Shape``, so only once the pads are constants is the
  padded tensor's shape known, and its window reshapes after it. Left unknown, onnx2tf guessed the
  layout of the window attention's 5-D Transpose and built a MatMul of incompatible shapes; the
  shifted-window mask, computed from constants (ConstantOfShape, Expand, ScatterND), reached onnx2tf
  as numpy values and failed as "Output tensors of a Functional model must be the output of a layer".
  onnx2tf runs ``Shape`` on its NHWC tensors, so
  ShuffleNet's ``x.chunk(2, dim=1)``, exported as ``Slice`` up to ``Shape(x)[1] / 2``, sliced the
  height instead of the channels and the next convolution failed ("tf.nn.convolution ... Negative
  dimension size").
* ShuffleNet's channel shuffle (Reshape to [N, g, C/g, H, W], Transpose [0, 2, 1, 3, 4], Reshape
  back) becomes one ``Gather`` of the channels in shuffled order: a 5-D transpose has no channel axis
  for onnx2tf's layout inference to follow.
* An ``AveragePool`` that pads and counts the padding (``count_include_pad=1``, torch's default:
  Inception-V3's pool branches) becomes a zero ``Pad`` and an ``AveragePool`` without padding.
  onnx2tf pools without the padding and rescales by a multiplier, which it got wrong where the kernel
  covers the whole map: a 3x3 pool padded by 1 on a 2x2 map was off by up to 0.25 on values of about 1,
  and an Inception-V3 at 128 px (its last blocks at 2x2) converted to an FP32 TFLite at cosine 0.843
  to its ONNX model.
* A ``Where`` of rank 6 or more whose condition and one branch are constants (torch's ``masked_fill``
  with a constant mask) becomes a ``Mul`` by the 0/1 mask plus the constant part: exact for finite
  values. TFLite's SELECT_V2 broadcasts up to 5-D, so beyond that the converter broadcasts the
  constant with BROADCAST_TO; full-integer, it gave that constant its own int8 scale and zero point,
  but BROADCAST_TO and SELECT pass int8 codes through without requantizing, so every masked element
  read the fill's code at the other tensor's scale. torch decomposes an adaptive average pool whose
  output size does not divide its input (VGG's 7x7 pool over the 4x4 map of a 128 px input) into
  exactly that, at rank 6: VGG-11 at 128 px converted at cosine 0.733 (0% top-1 agreement) although
  its FP32 TFLite matched ONNX exactly; a three-layer stand-in went from 0.834 to 0.99998. Up to 5-D
  the converter quantizes the fill at the other branch's scale (a 4-D masked_fill: 0.99995), and
  onnx2tf's layout inference misplaced a 4-D mask operand of Mul, so lower ranks keep their Where.
* ``F.normalize`` (Swin V2's cosine attention on queries and keys), exported as
  ``x / Expand(Clip(ReduceL2(x), min=eps), Shape(x))``, becomes ``x / Sqrt(Max(ReduceSumSquare(x), eps**2))``:
  the same value up to float rounding (sqrt is monotonic), and the form the TFLite converter fuses
  into L2_NORMALIZATION, which has an int8 kernel. As exported, onnx2tf's Expand (a Mul by ones) and
  the floor after the square root kept the converter from fusing, and SQUARE, SQRT and DIV, which
  have no int8 kernels, left Swin V2 needing ``--float-fallback``: Swin-V2-T at 128 px then had
  cosine 0.78 (builtin kernels 0.75); full-integer with L2_NORMALIZATION, 0.913 (builtin 0.992).
* torch's Erf GELU (five ops) becomes ONNX's one ``Gelu`` op, the model converted to opset 20 where
  older: onnx2tf's own fusion of the five mislaid a GELU that follows a 4-D Add (FastViT); see
  :mod:`edgekit.quantize.tflite.onnx_gelu`.
* A ViT's class token (any constant rows concatenated before a LayerNorm) is normalized apart from the
  image's tokens, and carried scaled up in the residual stream where it is small: not a mistranslation
  but a loss of full-integer fidelity (one int8 scale per tensor); see
  :mod:`edgekit.quantize.onnx_tokens` and :mod:`edgekit.quantize.onnx_token_scales`. The one rewrite
  here that is not exact: LayerNorm's epsilon weighs less in a scaled row (far under an int8 step).
* An image input exported with dynamic height and width (``dynamic_axes``, common for detectors and
  segmenters) gets the calibration images' size: onnx2tf ran its checks on a 1x1 stand-in, which
  ONNX Runtime refused at the first 3x3 convolution, and a small conv net then converted at cosine
  0.9985 to its ONNX model (static: exact). A TFLite INT8 model has one input size anyway; a dynamic
  batch stays dynamic (onnx2tf handles it).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.quantize import onnx_graph
from edgekit.quantize.onnx_tokens import constant_tokens_kept_apart
from edgekit.quantize.tflite.onnx_gelu import at_gelu_opset, erf_gelus_as_gelu_ops

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow"}  # a one-element operand broadcasts as a scalar does
SHUFFLE_PERM = [0, 2, 1, 3, 4]
L2_NORMALIZATION_RANK = 4  # TFLite's L2_NORMALIZATION kernel refuses more dimensions (l2norm.cc), fused or not


def prepare_for_onnx2tf(onnx_path: str | Path, copy: Path, image_shape: Sequence[int] | None = None,
                        calibration: np.ndarray | None = None) -> None:
    """Write ``onnx_path``'s model to ``copy`` with the rewrites above (a plain copy when none applies).
    ``image_shape``: one calibration item's (C, H, W), for an input whose height or width is dynamic.
    ``calibration``: a few calibration images (NCHW), which measure the constant-token row scales."""
    import onnx

    model, changed = at_gelu_opset(onnx.load(str(onnx_path)))  # first: the rewrites below work at its opset
    changed = (_static_image_input(model.graph, image_shape) if image_shape is not None else False) or changed
    changed = _constants_to_initializers(model.graph) or changed
    # A folded Pad or Reshape makes its output's shape static: fold again, one round per step of a chain
    # of shapes, as many as needed (each round folds something or ends). Swin's padding arithmetic takes 3
    # a block (pads -> Pad's shape -> window reshapes) and every block waits on the one before: Swin-S at
    # 128 px took 53. A cap of 32 left its block 10 onward unfolded, and onnx2tf then mistranslated that
    # block's attention (runtime shapes through a 5-D Transpose).
    for _ in range(len(model.graph.node)):
        if not _fold_shape_arithmetic(model):
            break
        changed = True
    changed = _scalar_operands_as_arrays(model.graph) or changed
    changed = _shuffles_to_gathers(model.graph) or changed
    changed = _average_pool_pads_explicit(model.graph) or changed
    changed = _constant_selects_as_masks(model) or changed
    changed = _clamped_l2_norms_as_square_roots(model) or changed
    changed = erf_gelus_as_gelu_ops(model) or changed
    changed = constant_tokens_kept_apart(model, calibration) or changed
    if changed:
        onnx_graph.drop_unused_initializers(model.graph)
        onnx.save(model, str(copy))
    else:
        shutil.copyfile(onnx_path, copy)


def _static_image_input(graph: Any, image_shape: Sequence[int]) -> bool:
    """Give the one image input's dynamic non-batch dimensions ``image_shape``'s sizes; the stored
    intermediate shapes, inferred for the dynamic ones, are dropped (shape folding infers them again)."""
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim if len(inputs) == 1 else []
    if len(dims) != len(image_shape) + 1:
        return False
    changed = False
    for dim, size in zip(list(dims)[1:], image_shape):
        if not dim.HasField("dim_value"):
            dim.dim_value = int(size)
            changed = True
    if changed:
        del graph.value_info[:]
    return changed


def _constants_to_initializers(graph: Any) -> bool:
    from onnx import numpy_helper

    kept = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and len(node.attribute) == 1 and value is not None:
            graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), node.output[0]))
        else:
            kept.append(node)
    if len(kept) == len(graph.node):
        return False
    del graph.node[:]
    graph.node.extend(kept)
    return True


def _scalar_operands_as_arrays(graph: Any) -> bool:
    """Float scalars read only by element-wise arithmetic -> one-element arrays. Float only: integer
    scalars are shape arithmetic, where a rank is part of the value."""
    from onnx import numpy_helper

    consumers = {name: {n.op_type for n in nodes} for name, nodes in onnx_graph.consumers(graph).items()}
    changed = False
    for index, initializer in enumerate(graph.initializer):
        array = numpy_helper.to_array(initializer)
        ops = consumers.get(initializer.name)
        if array.ndim == 0 and array.dtype.kind == "f" and ops and ops <= ELEMENTWISE:
            graph.initializer[index].CopyFrom(numpy_helper.from_array(array.reshape(1), initializer.name))
            changed = True
    return changed


def _shuffles_to_gathers(graph: Any) -> bool:
    """Reshape -> Transpose(0,2,1,3,4) -> Reshape chains with constant shapes -> Gather(axis=1)."""
    from onnx import helper, numpy_helper

    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers = onnx_graph.consumers(graph)
    replace: dict[int, Any] = {}  # id(first reshape) -> the Gather; the other two nodes dropped
    dropped: set[int] = set()
    for node in graph.node:
        shape = initializers.get(node.input[1]) if node.op_type == "Reshape" and len(node.input) > 1 else None
        if shape is None or shape.ndim != 1 or len(shape) != 5 or min(shape[1], shape[2]) <= 0:
            continue
        after = consumers.get(node.output[0], [])
        if len(after) != 1 or after[0].op_type != "Transpose":
            continue
        transpose = after[0]
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        back = consumers.get(transpose.output[0], [])
        if perm != SHUFFLE_PERM or len(back) != 1 or back[0].op_type != "Reshape":
            continue
        back_shape = initializers.get(back[0].input[1])
        groups, per_group = int(shape[1]), int(shape[2])
        if back_shape is None or len(back_shape) != 4 or int(back_shape[1]) not in (groups * per_group, -1):
            continue
        index = np.array([a * per_group + b for b in range(per_group) for a in range(groups)], np.int64)
        name = f"{node.output[0]}_shuffle_index"
        graph.initializer.append(numpy_helper.from_array(index, name))
        replace[id(node)] = helper.make_node("Gather", [node.input[0], name], [back[0].output[0]], axis=1,
                                             name=f"{node.name}_shuffle")
        dropped |= {id(transpose), id(back[0])}
    if not replace:
        return False
    nodes = [replace.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(nodes)
    return True


def _average_pool_pads_explicit(graph: Any) -> bool:
    """AveragePool(pads, count_include_pad=1, ceil_mode=0) -> Pad(zeros) -> AveragePool without pads:
    the same windows over the same values, each divided by the kernel's size."""
    from onnx import helper, numpy_helper

    nodes, changed = [], False
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        pads = list(attrs.get("pads", []))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        if (node.op_type != "AveragePool" or not any(pads) or not attrs.get("count_include_pad", 0)
                or attrs.get("ceil_mode", 0) or auto_pad not in (b"NOTSET", "NOTSET")):
            nodes.append(node)
            continue
        spatial = len(pads) // 2
        name = f"{node.name or node.output[0]}_explicit_pads"
        graph.initializer.append(numpy_helper.from_array(
            np.array([0, 0, *pads[:spatial], 0, 0, *pads[spatial:]], np.int64), name))
        padded = f"{node.output[0]}_padded"
        nodes.append(helper.make_node("Pad", [node.input[0], name], [padded], mode="constant", name=name))
        kept = {k: v for k, v in attrs.items() if k not in ("pads", "count_include_pad")}
        nodes.append(helper.make_node("AveragePool", [padded], list(node.output), name=node.name, **kept))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


SELECT_BROADCAST_RANK = 5  # TFLite's SELECT_V2 broadcasts up to 5-D


def _constant_selects_as_masks(model: Any) -> bool:
    """Where(C, A, B) of rank over ``SELECT_BROADCAST_RANK`` with C and A (or B) constant ->
    Mul(B, 1 - C) + where(C, A, 0) (or the mirror): the same values wherever the runtime branch is
    finite, through ops that requantize."""
    from onnx import helper, numpy_helper

    graph = model.graph
    wheres = [n for n in graph.node if n.op_type == "Where"]
    if not wheres:
        return False
    initializers = {i.name: numpy_helper.to_array(i) for i in graph.initializer
                    if any(i.name in n.input for n in wheres)}
    ranks = _ranks(model)
    nodes, changed = [], False
    for node in graph.node:
        parts = [initializers.get(name) for name in node.input] if node.op_type == "Where" else []
        if (len(parts) != 3 or parts[0] is None or parts[0].dtype != np.bool_ or (parts[1] is None) == (parts[2] is None)
                or ranks.get(node.output[0], 0) <= SELECT_BROADCAST_RANK):
            nodes.append(node)
            continue
        condition = parts[0]
        fixed, runtime, keep = (parts[1], node.input[2], ~condition) if parts[1] is not None else (
            parts[2], node.input[1], condition)
        if fixed.dtype.kind != "f" or not np.all(np.isfinite(fixed)):
            nodes.append(node)
            continue
        base = node.name or node.output[0]
        mask, constant = f"{base}_keep_mask", np.where(keep, fixed.dtype.type(0), fixed)
        # the mask at the constants' joint shape, so that Mul alone has Where's output shape when the fill is zero
        mask_values = np.broadcast_to(keep, np.broadcast_shapes(keep.shape, fixed.shape)).astype(fixed.dtype)
        graph.initializer.append(numpy_helper.from_array(mask_values, mask))
        if np.any(constant):
            masked = f"{base}_masked"
            graph.initializer.append(numpy_helper.from_array(constant, f"{base}_fill"))
            nodes.append(helper.make_node("Mul", [runtime, mask], [masked], name=f"{base}_mask"))
            nodes.append(helper.make_node("Add", [masked, f"{base}_fill"], list(node.output), name=f"{base}_fill"))
        else:
            nodes.append(helper.make_node("Mul", [runtime, mask], list(node.output), name=f"{base}_mask"))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(nodes)
    return changed


def _clamped_l2_norms_as_square_roots(model: Any) -> bool:
    """x / Expand(Clip(ReduceL2(x), min=eps), Shape(x)) (torch's ``F.normalize``) ->
    x / Sqrt(Max(ReduceSumSquare(x), eps**2)): the same value (sqrt is monotonic; Div broadcasts as
    Expand did), in the form the TFLite converter fuses into L2_NORMALIZATION, which has an int8 kernel."""
    from onnx import helper, numpy_helper

    graph = model.graph
    clips = [n for n in graph.node if n.op_type == "Clip" and len(n.input) >= 2 and n.input[1]
             and not any(n.input[2:])]  # a floor and no ceiling
    if not clips or not any(n.op_type == "ReduceL2" for n in graph.node):
        return False
    consumers, shapes = onnx_graph.consumers(graph), onnx_graph.static_shapes(model) or {}
    read = {c.input[1] for c in clips} | {n.input[1] for n in graph.node if n.op_type == "Expand" and len(n.input) == 2}
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name in read}
    produced = {out: node for node in graph.node for out in node.output}
    rewritten: dict[int, list[Any]] = {}
    for clip in clips:
        norm, floor = produced.get(clip.input[0]), constants.get(clip.input[1])
        if (norm is None or norm.op_type != "ReduceL2" or len(consumers[norm.output[0]]) != 1 or floor is None
                or floor.size != 1 or floor.dtype.kind != "f"):
            continue
        x = norm.input[0]
        divides = _normalizing_divides(clip.output[0], x, consumers, constants, shapes.get(x))
        if divides is None:
            continue
        base = clip.name or clip.output[0]
        squares, floored, floor_name = f"{base}_squares", f"{base}_floored", f"{base}_floor_squared"
        graph.initializer.append(numpy_helper.from_array(np.square(floor.reshape(1)), floor_name))
        rewritten[id(norm)] = [helper.make_node("ReduceSumSquare", list(norm.input), [squares], name=squares,
                                                **{a.name: helper.get_attribute_value(a) for a in norm.attribute})]
        rewritten[id(clip)] = [helper.make_node("Max", [squares, floor_name], [floored], name=f"{base}_floor"),
                               helper.make_node("Sqrt", [floored], list(clip.output), name=f"{base}_sqrt")]
        for expand, divide in divides:
            rewritten[id(expand)] = []
            rewritten[id(divide)] = [helper.make_node("Div", [x, clip.output[0]], list(divide.output), name=divide.name)]
    if not rewritten:
        return False
    nodes = [new for node in graph.node for new in rewritten.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)
    return True


def _normalizing_divides(norm: str, x: str, consumers: dict[str, list[Any]], constants: dict[str, np.ndarray],
                         x_shape: list[int] | None) -> list[tuple[Any, Any]] | None:
    """The (Expand, Div) pairs through which ``norm`` only divides ``x``, each Expand to ``x``'s own shape
    (so Div's broadcasting does the same; onnx2tf translates Expand as a Mul by ones, which keeps the
    converter from fusing): None where ``norm`` has any other use, or ``x`` has more dimensions than
    L2_NORMALIZATION takes (the converter fused a 5-D one all the same, which then failed to prepare)."""
    pairs = []
    for expand in consumers.get(norm, []):
        shape = constants.get(expand.input[1]) if expand.op_type == "Expand" and len(expand.input) == 2 else None
        readers = consumers.get(expand.output[0], [])
        if (shape is None or x_shape is None or len(x_shape) > L2_NORMALIZATION_RANK
                or [int(d) for d in shape] != x_shape or len(readers) != 1
                or readers[0].op_type != "Div" or list(readers[0].input) != [x, expand.output[0]]):
            return None
        pairs.append((expand, readers[0]))
    return pairs or None


def _ranks(model: Any) -> dict[str, int]:
    """Each tensor's rank where shape inference knows it (none if inference fails: nothing rank-dependent
    is rewritten)."""
    inferred = onnx_graph.inferred_graph(model)
    if inferred is None:
        return {}
    return {info.name: len(info.type.tensor_type.shape.dim) for info in [*inferred.value_info, *inferred.output]
            if info.type.tensor_type.HasField("shape")}


SMALL = 64  # a folded Shape is a shape vector
MAX_FOLDED = 1 << 20  # elements: a node computing on constants only (Swin's shifted-window mask) is folded
NOT_FOLDED = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _fold_shape_arithmetic(model: Any) -> bool:
    """``Shape`` of statically shaped tensors, and every node computing on constants only (up to
    ``MAX_FOLDED`` elements), become initializers (evaluated by ONNX's reference implementation, one
    node at a time). One round; the caller repeats it while it folds something."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    constants = {i.name for i in graph.initializer}
    fresh = [v for v in graph.value_info if v.name not in constants]  # ranks the rewrites above may have changed
    if len(fresh) < len(graph.value_info):  # rebuilt at once: a repeated field's remove() is linear
        del graph.value_info[:]
        graph.value_info.extend(fresh)
    static = onnx_graph.static_shapes(model)
    if static is None:  # no inferred shapes, nothing folded: onnx2tf gets the graph as it is
        return False
    tensors = {i.name: i for i in graph.initializer}
    sizes = {name: math.prod(t.dims) for name, t in tensors.items()}
    known = _Arrays(tensors)  # each initializer read once it is needed: most are weights no fold reads
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    kept, changed = [], False
    for node in graph.node:
        value = None
        if node.op_type == "Shape" and node.input[0] in static:
            dims = static[node.input[0]]
            start = next((a.i for a in node.attribute if a.name == "start"), 0)
            end = next((a.i for a in node.attribute if a.name == "end"), len(dims))
            value = np.array(dims[start:end], np.int64)
        elif (len(node.output) == 1 and node.domain in ("", "ai.onnx") and node.op_type not in NOT_FOLDED
              and all(i in sizes and sizes[i] <= MAX_FOLDED for i in node.input if i)):
            single = helper.make_model(
                helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(node.output[0], 0, None)],
                                  [numpy_helper.from_array(known[i], i) for i in node.input if i]),
                opset_imports=[helper.make_opsetid("", opset)])
            try:
                value = np.asarray(ReferenceEvaluator(single).run(None, {})[0])
            except Exception:  # noqa: BLE001 - an op the reference cannot run stays in the graph, unfolded
                value = None
        if value is None or value.size > (SMALL if node.op_type == "Shape" else MAX_FOLDED):
            kept.append(node)
            continue
        known[node.output[0]], sizes[node.output[0]] = value, value.size
        graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        changed = True
    if changed:
        del graph.node[:]
        graph.node.extend(kept)
    return changed


class _Arrays(dict):
    """Initializers as arrays, each converted on first use."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        super().__init__()
        self.tensors = tensors

    def __missing__(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        value = self[name] = numpy_helper.to_array(self.tensors[name])
        return value

