"""Do ONNX Runtime's fused INT8 kernels compute the QDQ model as faithfully as its graph says? Asked
when the INT8 model does not look faithful.

ORT's default session fuses each DequantizeLinear -> op -> QuantizeLinear unit into an integer kernel
(QLinearConv, ...). On an Intel Xeon with AVX-512 VNNI (ORT 1.23.0) the fused QLinearConv of a
trained ShuffleNet-V2's first convolution reached cosine 0.81-0.86 against FP32 (varying from session to session) where the same INT8 file
run unfused reached 0.99992 (benchmarks/bench_ort_fused_kernels.py); the whole net 0.78 against
0.994, whatever the settings or remedies. A user who sees a poor INT8 must learn that the quantized
model is right and the kernels are not, so the fix is not more calibration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.quantize import fidelity as fidelity_mod

GAP = 0.005  # cosine points the unfused graph must gain to be worth a line (as kernels.GAP for TFLite)


def fused_kernels_check(check: fidelity_mod.Check, int8: Path,
                        fused: fidelity_mod.Fidelity | None) -> tuple[dict[str, Any], str | None]:
    """({"fidelity_unfused": ...} or {}, the warning or None): measured only when the default (fused)
    fidelity missed the threshold, so a faithful model pays nothing."""
    unfused = fidelity_mod.second_opinion(check, int8, fused, GAP, delegate="none")  # the runner: no fusions
    if unfused is None:
        return {}, None
    assert fused is not None  # second_opinion measures only after a first measurement
    return {"fidelity_unfused": unfused.as_dict()}, (
        f"ONNX Runtime's fused INT8 kernels on this CPU compute this model less faithfully than its own QDQ graph: "
        f"cosine {fused.cosine:.4f}, against {unfused.cosine:.4f} with each QuantizeLinear/DequantizeLinear run in "
        "float (graph optimizations off); the quantization is not at fault, the kernels are: try --runtime tflite, "
        "or measure on the target, whose CPU may not show it")
