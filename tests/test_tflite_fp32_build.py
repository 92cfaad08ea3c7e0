"""One onnx2tf run serves the INT8 and the FP32 TFLite conversion where the two builds compute the same
(no max-pool padding that a 0 could win); where one could, the FP32 reference keeps the float build's
minus-infinity padding. Real onnx2tf, converter and interpreter."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekit.export import export_onnx
from edgekit.quantize.tflite.keras_build import integer_graph_computes_float


class Pooled(torch.nn.Module):
    """conv, an optional activation, a 3x3/2 max-pool padded by 1, then a head."""

    def __init__(self, activation: torch.nn.Module | None, padding: int = 1, ceil_mode: bool = False) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.activation = activation or torch.nn.Identity()
        self.pool = torch.nn.MaxPool2d(3, 2, padding=padding, ceil_mode=ceil_mode)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.activation(self.conv(x))).mean((2, 3)))


class Branches(torch.nn.Module):
    """GoogLeNet's pattern: a padded max-pool over the concat of two ReLU branches."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 1)
        self.pool = torch.nn.MaxPool2d(3, 1, padding=1, ceil_mode=True)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
        return self.head(self.pool(y).mean((2, 3)))


def _onnx(module: torch.nn.Module, path: Path) -> onnx.ModelProto:
    torch.manual_seed(0)
    export_onnx(module.eval(), torch.zeros(1, 3, 16, 16), path)
    return onnx.load(str(path))


@pytest.mark.parametrize("module,same", [
    (lambda: Pooled(torch.nn.ReLU()), True),             # ResNet's stem: a pad never beats a ReLU output
    (lambda: Pooled(torch.nn.ReLU6()), True),            # Clip(0, 6)
    (lambda: Pooled(torch.nn.Hardtanh(-1.0, 1.0)), False),  # Clip(-1, 1): negative values
    (lambda: Pooled(None), False),                       # a conv's output straight into a padded pool
    (lambda: Pooled(None, padding=0), True),             # no padding at all
    (lambda: Pooled(None, padding=0, ceil_mode=True), False),  # ceil mode pads the far side
    (Branches, True),
], ids=["relu", "relu6", "hardtanh", "no-activation", "unpadded", "ceil-mode", "concat-of-relus"])
def test_integer_build_serves_fp32_only_where_no_pad_can_win(module, same: bool, tmp_path: Path) -> None:
    assert integer_graph_computes_float(_onnx(module(), tmp_path / "m.onnx")) is same


def test_fp32_reference_keeps_minus_infinity_padding_where_a_zero_would_win(tmp_path: Path) -> None:
    """Every value the pool sees is negative (bias -5): padding with 0 would turn each border window's
    maximum into 0. The FP32 TFLite must match the ONNX model there."""
    from edgekit.quantize.tflite import quantize_tflite
    from edgekit.runtime import open_runner

    model = Pooled(None)
    with torch.no_grad():
        model.conv.weight.mul_(0.1)
        model.conv.bias.fill_(-5.0)
    path = tmp_path / "m.onnx"
    _onnx(model, path)
    images = np.random.default_rng(0).uniform(0, 1, (24, 3, 16, 16)).astype(np.float32)
    result = quantize_tflite(path, tmp_path / "m.int8.tflite", images, progress=False)
    reference = open_runner(str(path)).predict(images[:4])
    fp32 = open_runner(str(result.paths["fp32"])).predict(images[:4])
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
