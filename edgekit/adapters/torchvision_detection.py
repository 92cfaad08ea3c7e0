"""torchvision's single-stage detectors (RetinaNet, FCOS, SSD, SSDlite) as one dense output in the
detection task's layout ``[N, 4 + classes, anchors]``: boxes cx,cy,w,h in input pixels, then class
probabilities.

Why an adapter: a torchvision detector's ``forward`` resizes and normalises its input
(``GeneralizedRCNNTransform``), then filters by score, takes the top k and runs NMS per image: data-
dependent shapes an INT8 runtime cannot run and that make two runtimes' outputs incomparable. Here
the input is an already normalised NCHW batch (edgekit's calibration recipes normalise), the
backbone and head run as they are, and the boxes are decoded by the model's own anchor generator
and box coder; filtering and NMS are the host's (:mod:`edgekit.tasks.boxes`), as for every detector.

Scores are what torchvision's own post-processing ranks by: sigmoid for RetinaNet,
``sqrt(sigmoid(class) * sigmoid(centerness))`` for FCOS, softmax for SSD with the background column
dropped (so SSD's class id ``k`` here is torchvision's label ``k + 1``). Boxes are clipped to the
image as torchvision clips them. The anchors depend on the input size only: made on the first call
for each size and kept (a constant in the exported graph).

Two-stage detectors (Faster, Mask, Keypoint R-CNN) are refused: their second stage runs on
proposals chosen by NMS inside the network, so they have no dense output to hand the host.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekit.errors import EdgekitError, first_line

SINGLE_STAGE_MODULES = ("retinanet", "fcos", "ssd", "ssdlite")  # torchvision.models.detection.<module>


def _builders() -> dict[str, Any]:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models.detection)
    return {name: torchvision.models.get_model_builder(name) for name in names}


def is_detection_name(name: str) -> bool:
    return name in _builders()


def single_stage_names() -> list[str]:
    return sorted(n for n, b in _builders().items() if b.__module__.rsplit(".", 1)[-1] in SINGLE_STAGE_MODULES)


def detection_model(name: str, kwargs: dict[str, Any]) -> "TorchvisionDetector":
    """``torchvision:NAME`` for a detector: random weights (nothing is downloaded), wrapped."""
    builder = _builders()[name]
    if builder.__module__.rsplit(".", 1)[-1] not in SINGLE_STAGE_MODULES:
        raise EdgekitError(
            f"torchvision:{name}: a two-stage detector (region proposals, then per-region heads on boxes chosen "
            "by NMS inside the network) has no dense output for edgekit's detection task; use a single-stage one: "
            f"{', '.join(single_stage_names())}")
    try:
        model = builder(weights=None, weights_backbone=None, **kwargs)
    except Exception as exc:  # a wrong kwarg, a size the builder refuses
        raise EdgekitError(f"torchvision:{name}: could not build ({type(exc).__name__}: {first_line(exc)})") from exc
    return TorchvisionDetector(model)


def _scoring(model: nn.Module) -> str:
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    for kind, cls in (("sigmoid", RetinaNet), ("fcos", FCOS), ("softmax", SSD)):
        if isinstance(model, cls):
            return kind
    raise EdgekitError(f"{type(model).__name__}: not a single-stage torchvision detector (RetinaNet, FCOS or SSD)")


class TorchvisionDetector(nn.Module):
    """Backbone + head + the model's own box decoding; no post-processing.

    ``backbone``/``head`` keep torchvision's attribute names, so a torchvision state dict of the
    same architecture loads into this module as it is (``--weights``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.scoring = _scoring(model)
        self.backbone = model.backbone
        self.head = model.head
        self.anchor_generator = model.anchor_generator
        self.box_coder = model.box_coder
        self._anchors: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        features = [features] if isinstance(features, torch.Tensor) else list(features.values())
        outputs = self.head(features)
        if isinstance(outputs, tuple):  # FCOS's regression head
            outputs = dict(zip(("bbox_regression", "bbox_ctrness"), outputs))
        anchors = self.anchors(x, features)
        boxes = self._decode(outputs["bbox_regression"], anchors)
        height, width = x.shape[-2:]
        x1, y1 = boxes[..., 0].clamp(0, width), boxes[..., 1].clamp(0, height)
        x2, y2 = boxes[..., 2].clamp(0, width), boxes[..., 3].clamp(0, height)
        xywh = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)
        return torch.cat((xywh, self._scores(outputs)), dim=-1).permute(0, 2, 1)

    def anchors(self, x: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """[A, 4] x1,y1,x2,y2 anchors of one image of ``x``'s size, from the model's anchor generator."""
        from torchvision.models.detection.image_list import ImageList

        key = (tuple(x.shape[-2:]), tuple(tuple(f.shape[-2:]) for f in features), x.dtype, x.device)
        if key not in self._anchors:
            images = ImageList(x[:1], [tuple(x.shape[-2:])])
            with torch.no_grad():
                self._anchors[key] = self.anchor_generator(images, [f[:1] for f in features])[0].detach()
        return self._anchors[key]

    def _decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """[N, A, 4] boxes: BoxLinearCoder (FCOS) broadcasts, BoxCoder decodes [K, 4] rows."""
        if hasattr(self.box_coder, "normalize_by_size"):
            return self.box_coder.decode(codes, anchors)
        batch = codes.shape[0]
        rows = self.box_coder.decode_single(codes.reshape(-1, 4), anchors.repeat(batch, 1))
        return rows.reshape(batch, -1, 4)

    def _scores(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = outputs["cls_logits"]
        if self.scoring == "sigmoid":
            return torch.sigmoid(logits)
        if self.scoring == "fcos":
            return torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(outputs["bbox_ctrness"]))
        return torch.softmax(logits, dim=-1)[..., 1:]
