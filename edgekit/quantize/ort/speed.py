"""Is the INT8 model slower than FP32 here, and why: said at quantize time, not discovered on the board.

ConvNeXt-Tiny's INT8 ran at 0.69x FP32 (issue 12): ORT has no integer kernel for LayerNormalization,
Gelu/Erf or Softmax on CPU, so each one runs in float between a DequantizeLinear and a
QuantizeLinear, and the conversions cost more than the integer convolutions save. Those ops are
counted in the INT8 graph (deterministic) and named; the timing is ``edgekit.quantize.speed``'s.
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from edgekit.quantize import onnx_graph
from edgekit.quantize.speed import small_model_reason


# ops ORT's CPU provider runs on int8 once its QDQ transformers fuse or drop the Q/DQ pairs around them
INTEGER_OPS = frozenset({
    "Conv", "ConvInteger", "MatMul", "MatMulInteger", "Gemm", "Add", "Mul", "Concat", "MaxPool", "AveragePool",
    "GlobalAveragePool", "Relu", "Clip", "LeakyRelu", "Sigmoid", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
    "Flatten", "Resize", "Split", "Gather", "Pad", "Slice", "Expand", "Tile", "Where", "ArgMax", "Identity",
})
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def float_ops_between_qdq(model: Any) -> collections.Counter[str]:
    """Op types (with counts) that run in float inside the INT8 graph: fed by a DequantizeLinear or
    feeding a QuantizeLinear, with no integer kernel in ORT's CPU provider."""
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers = onnx_graph.consumers(model.graph)
    found: collections.Counter[str] = collections.Counter()
    for node in model.graph.node:
        if node.op_type in _QDQ or node.op_type in INTEGER_OPS:
            continue
        fed = any(getattr(producers.get(i), "op_type", None) == "DequantizeLinear" for i in node.input)
        feeds = any(c.op_type == "QuantizeLinear" for o in node.output for c in consumers.get(o, []))
        if fed or feeds:
            found[node.op_type] += 1
    return found


def reason(int8: str | Path, settings: dict[str, Any], fp32_p50_ms: float | None = None) -> str | None:
    """Why INT8 can be slower here, where known: the float ops between Q/DQ, U8S8 without VNNI, or a
    model so small (FP32 under 1 ms) that converting to and from int8 costs more than the arithmetic saves."""
    import onnx

    ops = float_ops_between_qdq(onnx.load(str(int8), load_external_data=False))
    if ops:
        top = ", ".join(f"{op} x{n}" for op, n in ops.most_common(3))
        return (f"{sum(ops.values())} op(s) run in float between DequantizeLinear/QuantizeLinear ({top}); "
                "keep them in float as whole blocks (--exclude) or use FP32 on this CPU")
    from edgekit.isa import host_u8s8_saturates

    if settings.get("activation_type") == "uint8" and settings.get("weight_type") == "int8" and host_u8s8_saturates():
        return "U8S8 on an x86-64 CPU without VNNI: int8 dot products have no fast path here"
    return small_model_reason(fp32_p50_ms) if fp32_p50_ms is not None else None
