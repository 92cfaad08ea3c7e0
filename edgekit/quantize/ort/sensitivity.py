"""Which layers lose the most to INT8, and keeping them in float until accuracy is within budget.

Per-layer error comes from ONNX Runtime's QDQ debugging helpers: every activation of the float and
the QDQ model is captured on a few calibration samples and compared as a signal-to-quantization-
noise ratio (SQNR, dB; lower is worse). The ranking goes into the manifest, and
``--accuracy-budget`` excludes the worst producers (``nodes_to_exclude``) step by step.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.errors import EdgekitError, first_line
from edgekit.quantize import simulate
from edgekit.quantize.ort.settings import OrtQuantSettings

_log = logging.getLogger(__name__)


def layer_sensitivity(model: Any, fp32_path: str | Path, qdq_path: str | Path,
                      samples: np.ndarray) -> list[dict[str, Any]]:
    """Layers ranked worst first: ``{"node", "op", "tensor", "sqnr_db", "weight_sqnr_db"}`` for the
    tensors of the (already checked) float ``model`` at ``fp32_path``.

    The SQNR is computed here from ``create_activation_matching``'s pairs, not by ORT's
    ``compute_activation_error``: that helper indexes ``match["float"]`` for every QDQ tensor, and
    the QDQ model has tensors the float model lacks (ORT's pre-processing inlines HardSwish into
    HardSigmoid+Mul, named ``_inlfunc_HardSwish_*``), so on MobileNetV3 it raised ``KeyError: 'float'``.
    Such tensors have no float twin to compare with and are skipped.

    One sample at a time, summing signal and noise power per tensor: ORT's ``collect_activations``
    keeps every activation of every sample of both models, several GB for a ConvNeXt at 224x224.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        create_activation_matching, modify_model_output_intermediate_tensors,
    )

    input_name = next(i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer})
    producers = {out: node for node in model.graph.node for out in node.output}
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-sens-") as work, contextlib.redirect_stdout(io.StringIO()):
        float_aug = str(Path(work) / "float.onnx")
        qdq_aug = str(Path(work) / "qdq.onnx")
        modify_model_output_intermediate_tensors(str(fp32_path), float_aug)
        modify_model_output_intermediate_tensors(str(qdq_path), qdq_aug)
        float_run, qdq_run = _activation_reader(float_aug, input_name), _activation_reader(qdq_aug, input_name)
        for sample in samples:
            x = sample[None].astype(np.float32)
            for tensor, match in create_activation_matching(qdq_run(x), float_run(x)).items():
                float_side, qdq_side = match.get("float"), match.get("post_qdq")
                if tensor not in producers or float_side is None or qdq_side is None:
                    continue
                ref = np.asarray(float_side[0], np.float64)
                signal[tensor] = signal.get(tensor, 0.0) + float(np.sum(ref ** 2))
                noise[tensor] = noise.get(tensor, 0.0) + float(np.sum((ref - np.asarray(qdq_side[0], np.float64)) ** 2))
    weight_sqnr = _weight_sqnr(model)
    ranked = []
    for tensor in signal:
        node = producers[tensor]
        value = simulate.sqnr_from_powers(signal[tensor], noise[tensor])
        ranked.append({"node": node.name, "op": node.op_type, "tensor": tensor,
                       "sqnr_db": round(value, 2) if np.isfinite(value) else None,
                       "weight_sqnr_db": weight_sqnr.get(node.name)})
    ranked.sort(key=lambda r: r["sqnr_db"] if r["sqnr_db"] is not None else float("inf"))
    return ranked


def _activation_reader(augmented: str, input_name: str) -> Callable[[np.ndarray], dict[str, list[np.ndarray]]]:
    """One session over a model whose every tensor is an output (as ORT's ``collect_activations``
    opens it: no graph optimization); a function from one input to ``{tensor: [activation]}``."""
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import _TENSOR_SAVE_POSTFIX

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(augmented, sess_options=options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(x: np.ndarray) -> dict[str, list[np.ndarray]]:
        return {name[:-len(_TENSOR_SAVE_POSTFIX)]: [value] for name, value in zip(names, session.run(None, {input_name: x}))
                if name.endswith(_TENSOR_SAVE_POSTFIX)}
    return run


def ranking_or_reason(model: Any, fp32_path: str | Path, qdq_path: str | Path, samples: np.ndarray,
                      settings: OrtQuantSettings) -> tuple[list[dict[str, Any]] | None, str | None]:
    """``layer_sensitivity``, or None and why: the ranking is a diagnosis and must never cost the
    user a quantization that succeeded, so any failure in ORT's debugging helpers becomes a reason."""
    if settings.format != "QDQ":
        return None, f"not ranked: {settings.format} models have no QDQ pairs to compare"
    try:
        return layer_sensitivity(model, fp32_path, qdq_path, samples), None
    except Exception as exc:  # noqa: BLE001 - ORT's debugging helpers fail in library-specific ways
        return None, f"per-layer sensitivity not computed ({type(exc).__name__}: {first_line(exc)})"


def _weight_sqnr(model: Any) -> dict[str, float | None]:
    """Per-node SQNR of 8-bit symmetric per-channel weight quantization (``simulate.weight_errors``)."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    named = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            w = numpy_helper.to_array(weights[node.input[1]])
            if w.ndim >= 2:
                named.append((node.name, w, 0 if node.op_type != "MatMul" else 1))
    return {r["layer"]: r["sqnr_db"] if np.isfinite(r["sqnr_db"]) else None for r in simulate.weight_errors(named)}


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_PASS_THROUGH = ("Relu", "Clip", "BatchNormalization", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid")


def budget_candidates(model: Any, ranking: list[dict[str, Any]] | None) -> list[str]:
    """Every weighted layer, worst first: the order of ``--accuracy-budget``'s exclusions.

    ORT fuses Conv+Relu, so a convolution's error is measured at the activation after it; walk
    back from each ranked tensor to the layer that made it. Layers the ranking never reaches (the
    debug model runs unfused kernels, so it cannot see, e.g., U8S8 saturation) come last, worst
    weight SQNR first, so that "every layer in float" really means every layer.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    by_name = {node.name: node for node in model.graph.node}
    ordered: list[str] = []
    for row in ranking or []:
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
    quantize: Callable[[list[str]], Path],
    accuracy: Callable[[Path], float],
    fp32_accuracy: float,
    budget: float,
    candidates: list[str],
    log: Callable[[str], None] = _log.info,
    key: str = "--accuracy-budget",
) -> dict[str, Any]:
    """Exclude the worst layers (1, 2, 4, ... of them) until INT8 is within ``budget`` points of FP32;
    ``quantize(excluded)`` returns the file it wrote. The outcome names the file that met it; ``key``
    names the setting in the error (the flag, or the pipeline file's key)."""
    excluded: list[str] = []
    history = []
    step = 1
    while True:
        path = quantize(excluded)
        top1 = accuracy(path)
        history.append({"excluded": len(excluded), "top1": top1})
        log(f"accuracy budget: {len(excluded)} layer(s) in float -> top-1 {top1:.2f}% (FP32 {fp32_accuracy:.2f}%)")
        if fp32_accuracy - top1 <= budget:
            return {"met": True, "excluded": excluded, "top1": top1, "history": history, "path": path}
        remaining = [c for c in candidates if c not in excluded]
        if not remaining:
            raise EdgekitError(
                f"{key} {budget}: not met even with every weighted layer in float "
                f"(INT8 top-1 {top1:.2f}% vs FP32 {fp32_accuracy:.2f}%)"
            )
        excluded = excluded + remaining[:step]
        step *= 2
