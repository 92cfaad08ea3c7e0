"""Which layers lose the most to INT8, and keeping them in float until accuracy is within budget.

Per-layer error comes from ONNX Runtime's QDQ debugging helpers: every activation of the float and
the QDQ model is captured on a few calibration samples and compared as a signal-to-quantization-
noise ratio (SQNR, dB; lower is worse). The ranking goes into the manifest, and
``--accuracy-budget`` excludes the worst producers (``nodes_to_exclude``) step by step.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.inspect import load_onnx


class _Reader:
    def __init__(self, name: str, tensors: np.ndarray) -> None:
        self.items = iter([{name: t[None].astype(np.float32)} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.items, None)

    def __iter__(self):  # collect_activations iterates; quantize_static calls get_next
        return self.items


def layer_sensitivity(fp32_path: str | Path, qdq_path: str | Path, samples: np.ndarray) -> list[dict[str, Any]]:
    """Layers ranked worst first: ``{"node", "op", "tensor", "sqnr_db"}`` for float-model tensors."""
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, compute_activation_error, create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    model = load_onnx(fp32_path)
    input_name = next(i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer})
    producers = {out: node for node in model.graph.node for out in node.output}
    with tempfile.TemporaryDirectory(prefix="edgekit-sens-") as work, contextlib.redirect_stdout(io.StringIO()):
        float_aug = str(Path(work) / "float.onnx")
        qdq_aug = str(Path(work) / "qdq.onnx")
        modify_model_output_intermediate_tensors(str(fp32_path), float_aug)
        modify_model_output_intermediate_tensors(str(qdq_path), qdq_aug)
        float_acts = collect_activations(float_aug, _Reader(input_name, samples))
        qdq_acts = collect_activations(qdq_aug, _Reader(input_name, samples))
        errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    weight_sqnr = _weight_sqnr(model)
    ranked = []
    for tensor, err in errors.items():
        node = producers.get(tensor)
        if node is None or "xmodel_err" not in err:
            continue
        value = float(err["xmodel_err"])
        ranked.append({"node": node.name, "op": node.op_type, "tensor": tensor,
                       "sqnr_db": round(value, 2) if np.isfinite(value) else None,
                       "weight_sqnr_db": weight_sqnr.get(node.name)})
    ranked.sort(key=lambda r: r["sqnr_db"] if r["sqnr_db"] is not None else float("inf"))
    return ranked


def _weight_sqnr(model: Any) -> dict[str, float]:
    """Per-node SQNR of 8-bit symmetric per-channel weight quantization (edgekit.quantize.simulate):
    the weight side of the sensitivity, next to the activation side measured above."""
    from onnx import numpy_helper

    from edgekit.quantize import simulate

    weights = {i.name: i for i in model.graph.initializer}
    result = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
            if w.ndim >= 2:
                axis = 0 if node.op_type != "MatMul" else 1
                value = simulate.uniform(w, 8, symmetric=True, axis=axis).sqnr_db(w)
                result[node.name] = round(value, 2) if np.isfinite(value) else None
    return result


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_PASS_THROUGH = ("Relu", "Clip", "BatchNormalization", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid")


def budget_candidates(fp32_path: str | Path, ranking: list[dict[str, Any]]) -> list[str]:
    """Every weighted layer, worst first: the order of ``--accuracy-budget``'s exclusions.

    ORT fuses Conv+Relu, so a convolution's error is measured at the activation after it; walk
    back from each ranked tensor to the layer that made it. Layers the ranking never reaches (the
    debug model runs unfused kernels, so it cannot see, e.g., U8S8 saturation) come last, worst
    weight SQNR first, so that "every layer in float" really means every layer.
    """
    model = load_onnx(fp32_path)
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    ordered: list[str] = []
    for row in ranking:
        node = by_name.get(row["node"])
        while node is not None and node.op_type in _PASS_THROUGH and node.input:
            node = producers.get(node.input[0])
        if node is not None and node.op_type in WEIGHTED_OPS and node.name not in ordered:
            ordered.append(node.name)
    weight_sqnr = _weight_sqnr(model)
    rest = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.name not in ordered]
    rest.sort(key=lambda name: weight_sqnr.get(name) if weight_sqnr.get(name) is not None else float("inf"))
    return ordered + rest


def meet_accuracy_budget(
    quantize: Callable[[list[str]], None],
    accuracy: Callable[[], float],
    fp32_accuracy: float,
    budget: float,
    candidates: list[str],
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Exclude the worst layers (1, 2, 4, ... of them) until INT8 is within ``budget`` points of FP32."""
    excluded: list[str] = []
    history = []
    step = 1
    while True:
        quantize(excluded)
        top1 = accuracy()
        history.append({"excluded": len(excluded), "top1": top1})
        log(f"accuracy budget: {len(excluded)} layer(s) in float -> top-1 {top1:.2f}% (FP32 {fp32_accuracy:.2f}%)")
        if fp32_accuracy - top1 <= budget:
            return {"met": True, "excluded": excluded, "top1": top1, "history": history}
        remaining = [c for c in candidates if c not in excluded]
        if not remaining:
            raise EdgekitError(
                f"--accuracy-budget {budget}: not met even with every weighted layer in float "
                f"(INT8 top-1 {top1:.2f}% vs FP32 {fp32_accuracy:.2f}%)"
            )
        excluded = excluded + remaining[:step]
        step *= 2
