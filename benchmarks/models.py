"""Benchmark models: torchvision architectures with batch-norm statistics re-estimated on smooth
random images, so activations have a trained network's scale (random weights alone make them vanish,
and INT8 comparisons on vanishing outputs mean nothing). No downloads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision


def smooth_images(count: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Float NCHW images in ImageNet normalisation: upsampled random blobs, not white noise."""
    rng = np.random.default_rng(seed)
    small = torch.from_numpy(rng.uniform(0, 1, (count, 3, 7, 7)).astype(np.float32))
    images = torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return ((images.clamp(0, 1) - mean) / std).numpy()


def calibrated_model(name: str, images: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images))
    return model.eval()


def export(name: str, folder: Path, images: np.ndarray) -> Path:
    from edgekit.export import export_onnx

    path = folder / f"{name}.onnx"
    export_onnx(calibrated_model(name, images), torch.zeros(1, 3, 224, 224), path)
    return path
