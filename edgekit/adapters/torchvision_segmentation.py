"""torchvision's semantic segmenters (FCN, DeepLabV3, LR-ASPP) as the one ``[N, classes, H, W]``
tensor the segmentation task reads, instead of the ``OrderedDict`` torchvision returns.

The auxiliary head is a training aid: it is never run (kept as a submodule only when the model was
built with one, so that a torchvision state dict still loads by the same keys)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from edgekit.errors import EdgekitError, first_line


def _names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models.segmentation)


def is_segmentation_name(name: str) -> bool:
    return name in _names()


def segmentation_model(name: str, kwargs: dict[str, Any]) -> "TorchvisionSegmenter":
    """``torchvision:NAME`` for a segmenter: random weights (nothing is downloaded), wrapped."""
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)
    except Exception as exc:
        raise EdgekitError(f"torchvision:{name}: could not build ({type(exc).__name__}: {first_line(exc)})") from exc
    return TorchvisionSegmenter(model)


class TorchvisionSegmenter(nn.Module):
    """The main head's logits, upsampled to the input size as torchvision does (bilinear)."""

    def __init__(self, model: nn.Module) -> None:
        from torchvision.models.segmentation.lraspp import LRASPP

        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier
        self.takes_all_features = isinstance(model, LRASPP)  # its head reads the "low" and "high" features
        if getattr(model, "aux_classifier", None) is not None:
            self.aux_classifier = model.aux_classifier  # never run

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        out = self.classifier(features if self.takes_all_features else features["out"])
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
