"""Does XNNPACK compute the INT8 model as faithfully as TFLite's builtin kernels? Asked when it does not look faithful.

The TFLite interpreter applies the XNNPACK delegate by default (phones, boards and edgekit's own
fidelity check alike), and its INT8 kernels do not always compute what TFLite's reference kernels
do. Measured here (ai_edge_litert 2.1): one int8 BATCH_MATMUL of two activations (attention's
Q.K^T and A.V) kept cosine 0.985 against float through XNNPACK and 0.9998 through the builtin
kernel; a small ViT's INT8 0.773 vs 0.874; a conv model whose output is a Gram matrix 0.916 vs
0.99995. The other ops of a transformer (softmax, GELU, LayerNorm's mean/rsqrt, transposes) agreed
to 0.99999. The cause, found since: XNNPACK reads BATCH_MATMUL's right operand as if its zero point
were 0 (:mod:`matmul_operands`), which edgekit now makes it wherever the range is edgekit's to choose,
but not where an op fixes it (a softmax's int8 output has zero point -128: Q times softmax(K)^T gave
cosine -0.886 through XNNPACK, 0.9996 builtin). A user who sees a poor INT8 must learn whether the
model or the kernel is at fault, and that a target profile with ``tflite: {delegate: none}`` runs the
builtin kernels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Collection

import numpy as np

from edgekit.quantize import fidelity as fidelity_mod

GAP = 0.005  # cosine points the builtin kernels must gain to be worth a line: well above run-to-run noise (0)


def builtin_kernels_check(check: fidelity_mod.Check, int8: Path, with_xnnpack: fidelity_mod.Fidelity | None,
                          ops: Collection[str]) -> tuple[dict[str, Any], str | None]:
    """({"fidelity_builtin_kernels": ...} or {}, the warning or None): measured only when the default
    (XNNPACK) fidelity missed the threshold, so a faithful model pays nothing. ``check``: the fidelity
    check ``with_xnnpack`` came from (its FP32 outputs are reused); ``ops``: the model's TFLite op
    names (inspect_tflite's counts by name)."""
    builtin = fidelity_mod.second_opinion(check, int8, with_xnnpack, GAP, delegate="none")
    if builtin is None:
        return {}, None
    assert with_xnnpack is not None  # second_opinion measures only after a first measurement
    culprit = (" (its int8 BATCH_MATMUL reads a right operand's zero point as 0, which an op such as softmax "
               "fixes elsewhere)" if "BATCH_MATMUL" in ops else "")
    return {"fidelity_builtin_kernels": builtin.as_dict()}, (
        f"XNNPACK, the TFLite interpreter's default delegate, computes this INT8 model less faithfully than "
        f"TFLite's builtin kernels: cosine {with_xnnpack.cosine:.4f} vs {builtin.cosine:.4f}{culprit}; a target "
        f"profile with 'tflite: {{delegate: none}}' runs the builtin kernels (bench measures their speed)")
