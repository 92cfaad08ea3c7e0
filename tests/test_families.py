"""One representative per architecture family through all four stages: prune 0.5, export (parity),
ONNX Runtime INT8 and TFLite INT8, each INT8 model's fidelity to FP32 asserted.

Small configurations of the real torchvision classes (10 classes, 32-64 px) keep each family to
seconds. Weights are seeded and random, BatchNorm statistics are set on digit images (as in a
trained net: without them random nets' activations are nothing like a trained net's, and INT8
fidelity means little). The fidelity floors are what edgekit reaches on these nets with its
defaults (remedies on), a little under the measured figure (0.9895 for ShuffleNet's ORT INT8, 0.9986 for the ViT's TFLite,
0.9996-0.99995 for the rest), so a regression shows; the ViT's zero-initialised head is given
weights, else its logits are all zero and any INT8 model would match them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from edgekit.export import export_onnx
from edgekit.manifest import read_manifest
from edgekit.prune import prune


def _tv(name: str, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    import torchvision

    return lambda: torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)


def _densenet() -> torch.nn.Module:
    from torchvision.models import DenseNet

    return DenseNet(growth_rate=12, block_config=(2, 2, 2), num_init_features=24, num_classes=10)


def _convnext() -> torch.nn.Module:
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(32, 64, 2), CNBlockConfig(64, None, 2)], layer_scale=0.3, num_classes=10)


def _swin() -> torch.nn.Module:
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                           num_classes=10)


def _vit() -> torch.nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128,
                             num_classes=10)


# family: (builder, input size, ORT cosine floor, TFLite cosine floor)
FAMILIES: dict[str, tuple[Callable[[], torch.nn.Module], int, float, float]] = {
    "residual": (_tv("resnet18"), 64, 0.99, 0.99),
    "inverted-residual-hardswish-se": (_tv("mobilenet_v3_small"), 64, 0.99, 0.99),
    "depthwise": (_tv("mobilenet_v2", width_mult=0.5), 64, 0.99, 0.99),
    "grouped": (_tv("regnet_x_400mf"), 64, 0.99, 0.99),
    "dense-concat": (_densenet, 64, 0.99, 0.99),
    "inception-branches": (_tv("googlenet", aux_logits=False, init_weights=True), 64, 0.99, 0.99),
    "channel-shuffle": (_tv("shufflenet_v2_x0_5"), 64, 0.98, 0.99),
    "layernorm-gelu": (_convnext, 64, 0.99, 0.99),
    "windowed-attention": (_swin, 32, 0.99, 0.99),  # TFLite measured 0.9995 (onnx2tf failed before shapes were folded)
    "plain-vit": (_vit, 32, 0.99, 0.995),  # TFLite 0.9986 (0.9891 before its class token was kept apart)
}


@pytest.fixture(scope="module")
def digit_images() -> np.ndarray:
    from edgekit.data import calibration_tensors

    return calibration_tensors("builtin:digits/train", "digits", 96, seed=0, progress=False)


def _calibrated(build: Callable[[], torch.nn.Module], images: torch.Tensor) -> torch.nn.Module:
    """Seeded random weights; BatchNorm running statistics averaged over ``images`` (momentum None)."""
    torch.manual_seed(0)
    model = build()
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and not module.weight.any():  # ViT's zero-initialised head
            torch.nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in images.split(16):
            model(batch)
    return model.eval()


def _fidelity(path: Path) -> dict[str, Any]:
    stage = next(s for s in read_manifest(path)["stages"] if s["stage"] == "quantize")
    return {**stage["fidelity"], "label": stage["label"], "full_integer": stage["full_integer"]}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_through_all_four_stages(family: str, digit_images: np.ndarray, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.quantize.ort import quantize_ort_workflow
    from edgekit.quantize.tflite import quantize_tflite

    cwd = tmp_path / "cwd"  # nothing may land in the user's current directory (ORT's shape inference wrote there)
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    build, size, ort_floor, tflite_floor = FAMILIES[family]
    images = torch.nn.functional.interpolate(torch.from_numpy(digit_images), size=(size, size), mode="bilinear")
    model = _calibrated(build, images[:48])
    example = images[:1]
    report = prune(model, example, ratio=0.5, progress=None)
    assert report["macs_after"] < 0.9 * report["macs_before"], family
    assert model(example).shape == (1, 10)
    fp32 = tmp_path / f"{family}.onnx"
    assert export_onnx(model, example, fp32).parity.passed
    calib = images.numpy()[:64]
    held_out = images.numpy()[64:]
    ort = quantize_ort_workflow(fp32, tmp_path / f"{family}.int8.onnx", calib, holdout=held_out, progress=False,
                                log=lambda _: None)
    assert ort.fidelity is not None and ort.fidelity.cosine >= ort_floor, (family, ort.fidelity)
    tflite = quantize_tflite(fp32, tmp_path / f"{family}.int8.tflite", calib, holdout=held_out, write_fp32=False,
                             float_fallback=True, progress=False)
    assert tflite.fidelity is not None and tflite.fidelity.cosine >= tflite_floor, (family, tflite.fidelity)
    assert tflite.full_integer, (family, tflite.float_ops)  # every family here has an integer form
    assert not list(cwd.iterdir())
