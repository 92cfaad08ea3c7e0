"""Do ONNX Runtime's fused INT8 kernels compute the QDQ model as faithfully as its graph says? Asked
when the INT8 model does not look faithful.

ORT's default session fuses each DequantizeLinear -> op -> QuantizeLinear unit into an integer kernel
(QLinearConv, ...). On an Intel Xeon with AVX-512 VNNI (ORT 1.23.0) the fused QLinearConv of a
trained ShuffleNet-V2's first convolution reached cosine 0.81-0.86 against FP32 (varying from session to session) where the same INT8 file
run unfused reached 0.99992 (benchmarks/bench_ort_fused_kernels.py); the whole net 0.78 against
0.994, whatever the settings or remedies. A user who sees a poor INT8 must learn that the quantized
model is right and the kernels are not, so the fix is not more calibration: :func:`kernel_remedy`
finds the layer whose fused kernel departs from its graph and keeps it in float (that ShuffleNet:
0.80 -> 0.9905 with its first convolution in float, rounding floor 0.990), and says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.quantize import fidelity as fidelity_mod

GAP = 0.005  # cosine points the unfused graph must gain to be worth a line (as kernels.GAP for TFLite)


def fused_kernels_check(check: fidelity_mod.Check, int8: Path,
                        fused: fidelity_mod.Fidelity | None) -> tuple[dict[str, Any], str | None]:
    """({"fidelity_unfused": ...} or {}, the warning or None): measured only when the default (fused)
    fidelity missed the threshold, so a faithful model pays nothing."""
    unfused = fidelity_mod.second_opinion(check, int8, fused, GAP, delegate="none")  # the runner: no fusions
    if unfused is None or not kernels_can_be_judged(check):
        return {}, None
    assert fused is not None  # second_opinion measures only after a first measurement
    return {"fidelity_unfused": unfused.as_dict()}, (
        f"ONNX Runtime's fused INT8 kernels on this CPU compute this model less faithfully than its own QDQ graph: "
        f"cosine {fused.cosine:.4f}, against {unfused.cosine:.4f} with each QuantizeLinear/DequantizeLinear run in "
        "float (graph optimizations off); the quantization is not at fault, the kernels are: try --runtime tflite, "
        "or measure on the target, whose CPU may not show it")


def kernels_can_be_judged(check: fidelity_mod.Check) -> bool:
    """Whether a gap between fused and unfused says anything about the kernels: not for a net that
    turns float32-rounding-sized input noise into a ``GAP`` of cosine by itself (a random-weight
    EfficientNet: 0.983), where two right computations of it differ as much."""
    try:
        return check.float_spread() >= 1 - GAP
    except Exception:  # noqa: BLE001 - a diagnosis must not cost a quantization that succeeded
        return False


def remedied_warning(fix: dict[str, Any], final: fidelity_mod.Fidelity) -> str:
    """The warning once the miscomputed layers are in float (``fix``: :func:`kernel_remedy`'s record): the
    file differs from what a target whose kernels are right could run fully in INT8."""
    kept = fix["kept_in_float"]
    them = "it" if len(kept) == 1 else "them"
    return (f"ONNX Runtime's fused INT8 kernels on this CPU miscompute {', '.join(kept)} (cosine "
            f"{fix['fused_before']['cosine']:.4f} fused, against {fix['unfused_before']['cosine']:.4f} for the same QDQ "
            f"graph unfused): edgekit kept {them} in float, cosine {final.cosine:.4f}; a target whose CPU computes "
            f"{them} right could run {them} in INT8: measure there")


# --- the remedy: keep the layer the fused kernel miscomputes in float ------------------------------

ROUNDS = 3  # layers kept in float at most, one per round
SCAN_SAMPLES = 8
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # what ORT fuses into QLinear*/MatMulInteger kernels
_PASS_THROUGH = ("Relu", "Clip", "LeakyRelu")  # fused with the op before its QuantizeLinear


def _quantized_output(node: Any, consumers: dict[str, list[Any]]) -> str | None:
    """The DequantizeLinear output after ``node`` (through a fused activation): the tensor a fused
    kernel's result is read back as; None for a node left in float."""
    tensor = node.output[0]
    for _ in range(2):
        after = consumers.get(tensor, [])
        quantize = next((c for c in after if c.op_type == "QuantizeLinear"), None)
        if quantize is not None:
            dequantize = next((c for c in consumers.get(quantize.output[0], []) if c.op_type == "DequantizeLinear"), None)
            return dequantize.output[0] if dequantize is not None else None
        if len(after) != 1 or after[0].op_type not in _PASS_THROUGH:
            return None
        tensor = after[0].output[0]
    return None


def first_miscomputed(int8: Path, samples: np.ndarray, scratch: Path, threads: int | None = None,
                      skip: Sequence[str] = ()) -> str | None:
    """The first quantized compute node whose fused kernel departs from its own QDQ graph: the
    model cut after it (:func:`_cut`), run fused and unfused, differs by ``GAP`` cosine points.
    A departure carries downstream, so the cuts are bisected: about log2(nodes) cuts, each run on
    ``SCAN_SAMPLES`` images. Why cuts and not the whole graph with taps: an extra graph output changes
    which units ORT fuses (tapping the stem's output alone hid the ShuffleNet error)."""
    import onnx

    from edgekit.quantize import onnx_graph
    from edgekit.tasks.base import output_cosine

    model = onnx.load(str(int8))
    readers = onnx_graph.consumers(model.graph)
    cuts = [(node.name, out) for node in model.graph.node if node.op_type in COMPUTE_OPS and node.name not in skip
            for out in [_quantized_output(node, readers)] if out]
    images = np.ascontiguousarray(samples[:SCAN_SAMPLES], dtype=np.float32)

    def departs(index: int) -> bool:
        path = scratch / f"cut{index}.onnx"
        onnx.save(_cut(model, cuts[index][1]), str(path))
        fused = fidelity_mod.predict(path, images, threads)
        unfused = fidelity_mod.predict(path, images, threads, delegate="none")
        path.unlink()
        return output_cosine(fused.reshape(len(images), -1), unfused.reshape(len(images), -1)) < 1 - GAP

    low, high = 0, len(cuts) - 1  # the first departing cut lies in [low, high], if any
    if not cuts or not departs(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if departs(middle):
            high = middle
        else:
            low = middle + 1
    return cuts[low][0]


def _cut(model: Any, output: str) -> Any:
    """``model`` up to ``output``, its only output: the nodes it depends on, their initializers. (onnx's
    Extractor needs a shape for the output, which shape inference leaves out after a Reshape.)"""
    from onnx import TensorProto, helper

    producers = {name: node for node in model.graph.node for name in node.output}
    needed: set[int] = set()
    pending = [output]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            pending.extend(node.input)
    nodes = [node for node in model.graph.node if id(node) in needed]
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(nodes, "cut", list(model.graph.input),
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              [t for t in model.graph.initializer if t.name in used])
    return helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)


def keep_miscomputed_in_float(check: fidelity_mod.Check, int8: Path, fused: fidelity_mod.Fidelity,
                              requantize: Callable[[list[str]], Path], scratch: Path,
                              log: Callable[[str], None]) -> tuple[Path, fidelity_mod.Fidelity, list[str]]:
    """Up to ``ROUNDS`` times: find the layer the fused kernels miscompute and quantize again with it
    in float, kept while the default (fused) session's fidelity gains ``GAP``. The model, its fidelity
    and the layers kept in float (none: nothing helped). Measured: the trained ShuffleNet-V2-x0.5 with
    its first convolution in float, 0.988 against 0.78 (rounding floor 0.990)."""
    kept: list[str] = []
    for _ in range(ROUNDS):
        try:
            node = first_miscomputed(int8, check.samples, scratch, check.threads, skip=kept)
        except Exception:  # noqa: BLE001 - a diagnosis must not cost a quantization that succeeded
            return int8, fused, kept
        if node is None:
            break
        candidate = requantize([*kept, node])
        measured = check(candidate)
        log(f"ONNX Runtime's fused kernel miscomputes {node}: kept in float, cosine {fused.cosine:.4f} -> "
            f"{measured.cosine:.4f}")
        if measured.cosine - fused.cosine < GAP:
            break
        int8, fused, kept = candidate, measured, [*kept, node]
    return int8, fused, kept


def kernel_remedy(check: fidelity_mod.Check, int8: Path, fused: fidelity_mod.Fidelity,
                  requantize: Callable[[list[str]], Path], scratch: Path,
                  log: Callable[[str], None]) -> tuple[Path, fidelity_mod.Fidelity, dict[str, Any]]:
    """Where the fused kernels lose ``GAP`` against the same graph unfused, the model with the layers they
    miscompute in float (:func:`keep_miscomputed_in_float`), its fidelity and the record; else ``int8``
    as it is and an empty record."""
    unfused = fidelity_mod.second_opinion(check, int8, fused, GAP, delegate="none")
    if unfused is None or not kernels_can_be_judged(check):
        return int8, fused, {}
    path, after, kept = keep_miscomputed_in_float(check, int8, fused, requantize, scratch, log)
    if not kept:
        return int8, fused, {}
    return path, after, {"kept_in_float": kept, "fused_before": fused.as_dict(), "unfused_before": unfused.as_dict()}
