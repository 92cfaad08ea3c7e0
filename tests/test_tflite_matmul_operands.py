"""XNNPACK reads an int8 BATCH_MATMUL's right operand as if its zero point were 0: edgekit gives those
operands symmetric ranges, so the default delegate computes what TFLite's builtin kernels do.

Real onnx2tf, TFLite converter and interpreters (XNNPACK, the default, and the builtin kernels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def _batch_matmul_zero_points(path: Path) -> list[list[int]]:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(path.read_bytes()))
    graph, found = model.subgraphs[0], []
    for op in graph.operators:
        entry = model.operatorCodes[op.opcodeIndex]
        if max(entry.builtinCode, entry.deprecatedBuiltinCode) == schema.BuiltinOperator.BATCH_MATMUL:
            found.append([int(graph.tensors[i].quantization.zeroPoint[0]) for i in op.inputs])
    return found


def test_attention_with_off_centre_values_is_as_faithful_through_xnnpack_as_builtin(tmp_path: Path) -> None:
    """Queries, keys and values centred on 1.0 (zero points far from 0): before, Q.K^T and A.V through
    XNNPACK gave cosine 0.714 where the builtin kernels were faithful."""
    import torch

    from edgekit.export import export_onnx
    from edgekit.quantize import fidelity
    from edgekit.quantize.tflite import quantize_tflite

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.qkv = torch.nn.Conv2d(3, 32, 4, stride=4), torch.nn.Linear(32, 96)
            self.head = torch.nn.Linear(32, 10)

        def forward(self, x):
            tokens = self.stem(x).flatten(2).transpose(1, 2)
            q, k, v = (self.qkv(tokens) + 1.0).reshape(1, -1, 3, 4, 8).permute(2, 0, 3, 1, 4)
            weights = ((q @ k.transpose(-2, -1)) * 0.35).softmax(-1)
            return self.head((tokens + (weights @ v).transpose(1, 2).reshape(1, -1, 32)).mean(1))

    torch.manual_seed(0)
    export_onnx(Attention().eval(), torch.zeros(1, 3, 32, 32), tmp_path / "a.onnx")
    images = np.random.default_rng(0).random((48, 3, 32, 32), dtype=np.float32)
    out = tmp_path / "a.int8.tflite"
    result = quantize_tflite(tmp_path / "a.onnx", out, images[:32], holdout=images[32:], progress=False,
                             write_fp32=False, remedies=False)
    zero_points = _batch_matmul_zero_points(out)
    assert len(zero_points) == 2 and all(right == 0 for _, right in zero_points), zero_points
    assert any(left != 0 for left, _ in zero_points)  # the left operand keeps its own (softmax's -128)
    builtin = fidelity.measure(tmp_path / "a.onnx", out, images[32:], delegate="none")
    assert result.fidelity.cosine > 0.99 and abs(result.fidelity.cosine - builtin.cosine) < 1e-4, (
        result.fidelity, builtin)


def test_the_right_operand_chain_through_reshapes_and_transposes_is_found() -> None:
    """A BATCH_MATMUL's right operand and the same-scale ops above it share one zero point; a constant
    right operand (a weight) is left to the converter."""
    import tensorflow as tf
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    from edgekit.quantize.tflite.matmul_operands import right_operand_tensors

    weight = tf.constant(np.random.default_rng(0).standard_normal((1, 8, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec((1, 16, 8), tf.float32)])
    def block(x):
        values = tf.transpose(tf.reshape(x * 2.0, (1, 8, 16)), (0, 2, 1))
        return tf.linalg.matmul(tf.linalg.matmul(x, tf.transpose(x, (0, 2, 1))), values) @ weight

    converter = tf.lite.TFLiteConverter.from_concrete_functions([block.get_concrete_function()], block)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(converter.convert()))
    graph = model.subgraphs[0]
    producers = {out: model.operatorCodes[op.opcodeIndex].builtinCode for op in graph.operators for out in op.outputs}
    found = right_operand_tensors(model)
    ops = schema.BuiltinOperator
    # x itself (the converter folds the transposes into BATCH_MATMUL's adj_y), and the values' reshape of x * 2
    assert sorted(producers.get(i, -1) for i in found) == sorted([-1, ops.RESHAPE, ops.MUL]), found
    assert all(not model.buffers[graph.tensors[i].buffer].data for i in found)  # the weight is not among them
