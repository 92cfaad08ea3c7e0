"""XNNPACK (the TFLite interpreter's default delegate) against TFLite's builtin kernels: when an INT8
model looks unfaithful, quantize says whether the kernel is at fault. Real converter and interpreters."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekit.export import export_onnx
from edgekit.manifest import read_manifest
from edgekit.quantize.tflite import quantize_tflite


class GramHead(torch.nn.Module):
    """Two patch projections multiplied together (an int8 BATCH_MATMUL of two activations), the right one
    through a softmax, whose int8 output has a fixed zero point of -128 that edgekit cannot move to the
    0 that XNNPACK assumes (:mod:`edgekit.quantize.tflite.matmul_operands`), then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.q = torch.nn.Conv2d(3, 16, 4, 4)
        self.k = torch.nn.Conv2d(3, 16, 4, 4)
        self.fc = torch.nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.q(x).flatten(2), self.k(x).flatten(2)
        return self.fc((q @ k.softmax(1).transpose(1, 2)).flatten(1))


def _quantize(module: torch.nn.Module, tmp_path: Path) -> dict:
    torch.manual_seed(0)
    onnx_path = tmp_path / "m.onnx"
    export_onnx(module.eval(), torch.zeros(1, 3, 32, 32), onnx_path)
    images = np.random.default_rng(0).uniform(0, 1, (96, 3, 32, 32)).astype(np.float32)
    quantize_tflite(onnx_path, tmp_path / "m.int8.tflite", images, progress=False)
    return next(s for s in read_manifest(tmp_path / "m.int8.tflite")["stages"] if s["stage"] == "quantize")


def test_an_int8_matmul_of_two_activations_is_blamed_on_xnnpack_with_both_figures(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stage = _quantize(GramHead(), tmp_path)
    assert "BATCH_MATMUL" in stage["ops"]
    assert stage["fidelity"]["cosine"] < 0.99  # XNNPACK's (measured -0.886)
    assert stage["fidelity_builtin_kernels"]["cosine"] > 0.999  # the builtin kernels' (0.9996)
    blamed = [w for w in stage["warnings"] if w.startswith("XNNPACK")]
    assert len(blamed) == 1 and "BATCH_MATMUL" in blamed[0] and "delegate: none" in blamed[0]
    from edgekit.report.collect import describe_variant
    from edgekit.report.render import quantize_notes

    out = tmp_path / "m.int8.tflite"
    notes = quantize_notes({**describe_variant(read_manifest(out), out.name), "cosine": None})
    assert any(n.startswith("XNNPACK computes this INT8 less faithfully") and "0.99" in n for n in notes), notes


def test_a_faithful_model_pays_for_no_second_measurement(tmp_path: Path) -> None:
    torch.manual_seed(0)
    convs = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(8, 10))
    stage = _quantize(convs, tmp_path)
    assert stage["fidelity"]["ok"] and "fidelity_builtin_kernels" not in stage
