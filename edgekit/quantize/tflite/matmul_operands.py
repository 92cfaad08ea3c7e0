"""Symmetric ranges (zero point 0) for the right operand of every int8 BATCH_MATMUL of two activations.

XNNPACK, the TFLite interpreter's default delegate (phones, boards, edgekit's own checks), computes
an int8 BATCH_MATMUL as if its right operand's zero point were 0. Measured with ai_edge_litert 2.1 on
one BATCH_MATMUL against TFLite's builtin kernel: right operand zero point 0, XNNPACK and builtin
bit-identical whatever the left one's (-66 to 0); right operand centred on 1.0 (zero point -27 to -37),
cosine to float 0.47-0.76 through XNNPACK against 0.9999 builtin; even zero points of -2 and -11 cost
0.955. Attention's A.V reads V there (Swin-V2-S at 128 px: 0.803 through XNNPACK, 0.993 builtin).
The converter derives each tensor's zero point from its calibrated min/max, so the right operands,
and the reshapes and transposes that must share their quantization, get the range [-M, M*127/128]
(M the larger magnitude), which quantizes to zero point 0 and scale M/128: one bit less resolution at
most, for a tensor roughly centred on 0 (keys and values are linear projections) much less.
"""
from __future__ import annotations

from typing import Any

SAME_SCALE = ("RESHAPE", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "GATHER", "STRIDED_SLICE", "SLICE", "SPLIT")


def right_operand_tensors(model: Any) -> set[int]:
    """The activation tensors read as the right operand of a BATCH_MATMUL, with the tensors upstream of
    them through same-scale ops (which the quantizer gives one zero point along the chain)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgekit.quantize.tflite.flatbuffer_ops import builtin_code

    codes = {getattr(schema.BuiltinOperator, name) for name in SAME_SCALE}
    subgraph = model.subgraphs[0]

    def constant(index: int) -> bool:
        buffer = model.buffers[subgraph.tensors[index].buffer]
        return buffer.data is not None and len(buffer.data) > 0

    producers = {out: op for op in subgraph.operators for out in op.outputs}
    pending = [op.inputs[1] for op in subgraph.operators
               if builtin_code(model, op) == schema.BuiltinOperator.BATCH_MATMUL and not constant(op.inputs[1])]
    found: set[int] = set()
    while pending:
        index = pending.pop()
        if index in found or index < 0:
            continue
        found.add(index)
        producer = producers.get(index)
        if producer is not None and builtin_code(model, producer) in codes:
            pending.append(producer.inputs[0])
    return found


def has_batch_matmul(flatbuffer: bytes) -> bool:
    """Whether ``flatbuffer`` has a BATCH_MATMUL: only then is there a right operand to make symmetric."""
    from tensorflow.lite.python import schema_py_generated as schema

    from edgekit.quantize.tflite.flatbuffer_ops import uses_operator

    return uses_operator(flatbuffer, schema.BuiltinOperator.BATCH_MATMUL)


def make_right_operands_symmetric(model: Any) -> bool:
    """In ``model`` (the calibrator's float model unpacked, each tensor's min/max in its quantization),
    each BATCH_MATMUL right operand's range made symmetric; whether any range changed."""
    tensors = model.subgraphs[0].tensors
    changed = False
    for index in right_operand_tensors(model):
        quantization = tensors[index].quantization
        if quantization is None or quantization.min is None or len(quantization.min) != 1:
            continue
        magnitude = max(-float(quantization.min[0]), float(quantization.max[0]), 0.0)
        if magnitude > 0.0:
            quantization.min, quantization.max = [-magnitude], [magnitude * 127.0 / 128.0]
            changed = True
    return changed
