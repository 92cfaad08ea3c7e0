"""``edgekit inspect``: what is inside an ONNX or TFLite file, at a glance.

Inputs and outputs with dtypes and quantization parameters, the op histogram, parameter count,
MACs (convolutions and matrix products, from inferred shapes), file size, and whether (and how)
the model is quantized. Works without edgekit's manifest, so users can inspect any file.
"""
from __future__ import annotations

import collections
import importlib
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.runtime.verify import check_model_file, verify_onnx, verify_tflite

INSPECTABLE = (".onnx", ".tflite")  # the formats whose graphs edgekit reads (an OpenVINO IR it only runs)

_ONNX_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear"}
_ONNX_QOPERATOR_OPS = {"QLinearConv", "QLinearMatMul", "QLinearAdd", "QLinearMul", "ConvInteger", "MatMulInteger",
                       "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearLeakyRelu",
                       "QLinearSigmoid", "QGemm"}


def inspect_file(path: str | Path) -> dict[str, Any]:
    """Dispatch on the extension; a missing or unreadable file is a one-line error."""
    path = Path(path)
    if path.exists() and not path.is_dir() and path.suffix.lower() not in INSPECTABLE:
        raise EdgekitError(f"{path}: cannot inspect {path.suffix.lower() or 'extensionless'} files "
                           f"(expected {' or '.join(INSPECTABLE)})")
    check_model_file(path, "file")
    if path.suffix.lower() == ".onnx":
        info = inspect_onnx(path)
    else:
        info = inspect_tflite(path)
    info["file"] = str(path)
    info["size_bytes"] = path.stat().st_size
    return info


# -- ONNX ---------------------------------------------------------------------------------------

def load_onnx(path: str | Path) -> Any:
    """Load and check an ONNX model; a corrupt file is an EdgekitError naming it."""
    return verify_onnx(path)


def onnx_quantization(model: Any) -> str:
    """How an ONNX graph is quantized, from its operators: int8 QOperator, int8 QDQ or none (float)."""
    ops = {node.op_type for node in model.graph.node}
    if ops & _ONNX_QOPERATOR_OPS:
        return "int8 QOperator"
    return "int8 QDQ" if ops & _ONNX_QUANT_OPS else "none (float)"


def float_onnx(path: str | Path, model: Any = None) -> Any:
    """The model to quantize (``model``, else ``path`` loaded): an already-quantized one is refused,
    naming the file. Why: its Q/DQ pairs would be quantized again (ONNX Runtime then fails on duplicate
    node names, and onnx2tf's translation of them misses the ONNX model's output, cosine 0.94 on a
    small conv net)."""
    model = model if model is not None else load_onnx(path)
    kind = onnx_quantization(model)
    if kind != "none (float)":
        raise EdgekitError(f"{path}: already quantized ({kind}); quantize the FP32 model it came from "
                           "(edgekit export's .onnx)")
    return model


def inspect_onnx(path: str | Path) -> dict[str, Any]:
    import onnx
    from onnx import numpy_helper

    model = load_onnx(path)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    ops = collections.Counter(node.op_type for node in graph.node)
    params = int(sum(int(np.prod(init.dims)) if init.dims else 1 for init in graph.initializer))
    weight_types = collections.Counter(
        onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name for init in graph.initializer if len(init.dims) >= 2
    )
    quantization = onnx_quantization(model)

    def io_info(value_info: Any) -> dict[str, Any]:
        tensor = value_info.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name if tensor.elem_type else "?"
        return {"name": value_info.name, "shape": shape, "dtype": dtype}

    inputs = [io_info(v) for v in graph.input if v.name not in initializers]
    for item in inputs:  # QDQ models quantize their float input first: show the parameters used
        quant = _qdq_params_for(graph, initializers, item["name"], numpy_helper)
        if quant:
            item["quantization"] = quant
    return {
        "format": "onnx",
        "opset": {entry.domain or "ai.onnx": entry.version for entry in model.opset_import},
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": inputs,
        "outputs": [io_info(v) for v in graph.output],
        "ops": dict(ops.most_common()),
        "params": params,
        "weight_dtypes": dict(weight_types),
        "macs": onnx_macs(path, model),
        "quantization": quantization,
    }


def _qdq_params_for(graph: Any, initializers: dict[str, Any], tensor: str, numpy_helper: Any) -> dict[str, Any] | None:
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] == tensor:
            scale = initializers.get(node.input[1])
            zero = initializers.get(node.input[2]) if len(node.input) > 2 else None
            if scale is None:
                return None
            zero_value = numpy_helper.to_array(zero) if zero is not None else np.array(0, dtype=np.uint8)
            return {"scale": float(numpy_helper.to_array(scale).ravel()[0]),
                    "zero_point": int(zero_value.ravel()[0]), "dtype": zero_value.dtype.name}
    return None


def onnx_macs(path: str | Path, model: Any = None) -> int | None:
    """Multiply-accumulates of Conv/Gemm/MatMul (float or quantized) from inferred shapes; None if unknown."""
    import onnx

    model = model if model is not None else load_onnx(path)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        return None
    shapes: dict[str, list[int]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in inferred.graph.node:
        op = node.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            weight = shapes.get(node.input[3 if op == "QLinearConv" else 1])
            out = shapes.get(node.output[0])
            if weight and out:
                # every output element needs (cin / groups) * kh * kw MACs; weight is [cout, cin/g, kh, kw]
                total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QGemm"):
            a = shapes.get(node.input[0])
            out = shapes.get(node.output[0])
            if a and out:
                trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
                inner = a[-2] if trans_a and len(a) >= 2 else a[-1]
                total += int(np.prod(out)) * int(inner)
    return total


# -- TFLite -------------------------------------------------------------------------------------

def inspect_tflite(path: str | Path) -> dict[str, Any]:
    from edgekit.runtime.device_runner import load_tflite_interpreter_class

    verify_tflite(path, any_name=True)  # a corrupt flatbuffer can crash the interpreter: a child tries first
    interpreter_class, package, _ = load_tflite_interpreter_class()
    try:  # without the default XNNPACK delegate, so the op list is the model's own
        resolver = getattr(importlib.import_module(interpreter_class.__module__), "OpResolverType", None)
        options = {"experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES} if resolver else {}
        interpreter = interpreter_class(model_path=str(path), **options)
        interpreter.allocate_tensors()
    except Exception as exc:
        raise EdgekitError(f"{path}: not a loadable TFLite model ({first_line(exc)})") from exc
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops_details = interpreter._get_ops_details()  # public API has no op list; stable across TF/LiteRT
    ops = collections.Counter(op["op_name"] for op in ops_details)
    produced = {i for op in ops_details for i in op["outputs"]}
    consumed = {i for op in ops_details for i in op["inputs"] if i >= 0}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    constants = [tensors[i] for i in consumed - produced - graph_inputs if i in tensors]
    params = int(sum(int(np.prod(t["shape"])) for t in constants))
    float_ops = sorted({
        op["op_name"] for op in ops_details
        if any(tensors[i]["dtype"] == np.float32 for i in [*op["inputs"], *op["outputs"]] if i in tensors)
        and op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")
    })
    inputs = [_tflite_io(d) for d in interpreter.get_input_details()]
    from edgekit.runtime.device_runner.tflite_runner import in_onnx_order

    outputs = [_tflite_io(d) for d in in_onnx_order(interpreter, interpreter.get_output_details())]
    int_io = all(d["dtype"] in ("int8", "uint8", "int16") for d in [*inputs, *outputs])
    kind = _integer_kind(tensors, produced | graph_inputs)
    if not float_ops and int_io:
        quantization = f"full-integer {kind} (integer input and output)"
    elif not float_ops:
        quantization = f"{kind} inside, float input/output"
    elif ops.keys() & {"QUANTIZE", "DEQUANTIZE"}:
        quantization = f"mixed: float ops {', '.join(float_ops)}"
    else:
        quantization = "none (float)"
    return {
        "format": "tflite",
        "interpreter": package,
        "inputs": inputs,
        "outputs": outputs,
        "ops": dict(ops.most_common()),
        "params": params,
        "macs": _tflite_macs(ops_details, tensors),
        "float_ops": float_ops,
        "quantization": quantization,
    }


def _integer_kind(tensors: dict[int, dict[str, Any]], activations: set[int]) -> str:
    """``int8``, or ``16x8`` where activations are int16 (TFLite's int16-activation, int8-weight mode):
    a 16x8 model is not an INT8 one, and runs other (often slower) kernels."""
    if any(tensors[i]["dtype"] == np.int16 for i in activations if i in tensors):
        return "16x8 (int16 activations, int8 weights)"
    return "int8"


def _tflite_io(detail: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"name": detail["name"], "shape": [int(d) for d in detail["shape"]],
                            "dtype": np.dtype(detail["dtype"]).name}
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if scale:
        info["quantization"] = {"scale": float(scale), "zero_point": int(zero_point)}
    return info


def _tflite_macs(ops_details: list[dict[str, Any]], tensors: dict[int, dict[str, Any]]) -> int:
    total = 0
    for op in ops_details:
        name = op["op_name"]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"):
            continue
        try:
            weight = list(tensors[op["inputs"][1]]["shape"])
            out = list(tensors[op["outputs"][0]]["shape"])
        except (KeyError, IndexError):
            continue
        if name == "CONV_2D":  # weight [cout, kh, kw, cin]
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # weight [1, kh, kw, cout]
            total += int(np.prod(out)) * int(weight[1] * weight[2])
        else:
            total += int(np.prod(out)) * int(weight[-1] if name == "FULLY_CONNECTED" else weight[-2])
    return total
