"""What training minimises and how it validates, per task: one class per task, chosen by name.

The training loop (:mod:`edgekit.distill.train`) is task-agnostic: it feeds batches ``(x, y)``
and asks the objective for the loss (ground truth, distillation from the teacher's outputs, or
both) and for a validation score (higher is better). For detection and segmentation ``y`` is the
sample's index in its annotated data set, and the objective looks the annotation up there.

Detection trains on the model's *exported* output (``[N, 4 + classes, anchors]``: decoded boxes
cx,cy,w,h and class scores): what is trained is exactly what is deployed and scored.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.distill import distributed as dd
from edgekit.errors import EdgekitError

TASKS = ("classification", "detection", "segmentation")


def distillation_loss(student_logits: Any, teacher_logits: Any | None, labels: Any, alpha: float, temperature: float) -> Any:
    """KD loss per batch; rows whose label is -1 (unlabelled) get the distillation term only."""
    import torch
    import torch.nn.functional as F

    labelled = labels >= 0
    ce = F.cross_entropy(student_logits[labelled], labels[labelled]) if labelled.any() else student_logits.sum() * 0
    if teacher_logits is None:
        return ce
    t = temperature
    kd = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                  reduction="batchmean") * (t * t)
    weight = alpha if labelled.all() else torch.where(labelled, alpha, 1.0).float().mean()
    return weight * kd + (1 - weight) * ce


def accuracy(model: Any, loader: Any, device: Any = None, world: dd.World | None = None,
             precision: Any = None, channels_last: bool = False) -> float | None:
    """Top-1 percent on labelled data (None when the data has no labels); summed over ranks when distributed."""
    import torch

    world = world or dd.World()
    device = device or torch.device("cpu")
    model.eval()
    correct = total = 0
    with torch.no_grad(), torch.autocast(device.type, dtype=precision or torch.float32, enabled=precision is not None):
        for x, y, *_ in loader:
            keep = y >= 0
            if keep.any():
                x = to_device(x[keep], device, channels_last)
                correct += int((model(x).argmax(1).cpu() == y[keep]).sum())
                total += int(keep.sum())
    correct, total = dd.all_sum([correct, total], world, device)
    return 100.0 * correct / total if total else None


def to_device(x: Any, dev: Any, channels_last: bool) -> Any:
    """``x`` on ``dev``, channels-last for 4-D inputs when asked (what the training loop feeds)."""
    import torch

    x = x.to(dev, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def objective_for(task: str, dataset: Any | None) -> "Objective":
    """The objective for ``task`` on ``dataset`` (an edgekit Dataset; None for synthetic tensors)."""
    kinds = {"classification": Classification, "detection": Detection, "segmentation": Segmentation}
    if task not in kinds:
        raise EdgekitError(f"--task: {task!r} cannot be trained (tasks: {', '.join(TASKS)})")
    return kinds[task](dataset)


class Objective:
    """Loss and validation for one task; ``alpha`` weighs distillation against the ground truth."""

    metric = ""

    def __init__(self, dataset: Any | None) -> None:
        self.dataset = dataset

    def loss(self, outputs: Any, teacher: Any | None, y: Any, alpha: float, temperature: float,
             shape: tuple[int, ...]) -> Any:
        """The batch's loss; ``shape`` is the input batch's (N, C, H, W)."""
        raise NotImplementedError  # pragma: no cover

    def validate(self, model: Any, loader: Any, device: Any, to_device: Any) -> float | None:
        raise NotImplementedError  # pragma: no cover

    def _annotations(self, y: Any) -> list[Any]:
        if self.dataset is None or not hasattr(self.dataset, "annotation"):
            raise EdgekitError(f"{getattr(self.dataset, 'source', 'the training data')}: has no "
                               f"{type(self).__name__.lower()} annotations")
        return [self.dataset.annotation(int(i)) for i in y]


class Classification(Objective):
    """Cross-entropy on labels plus temperature-scaled KL to the teacher (Hinton et al.); top-1."""

    metric = "top1"

    def loss(self, outputs: Any, teacher: Any | None, y: Any, alpha: float, temperature: float,
             shape: tuple[int, ...]) -> Any:
        return distillation_loss(outputs, teacher, y, alpha, temperature)

    def validate(self, model: Any, loader: Any, device: Any, to_device: Any) -> float | None:
        return accuracy(model, loader, device)


class Segmentation(Objective):
    """Per-pixel cross-entropy (255 ignored) plus per-pixel KL to the teacher; validates by mIoU."""

    metric = "miou"

    def _masks(self, y: Any, device: Any) -> Any:
        import torch

        return torch.from_numpy(np.stack(self._annotations(y)).astype(np.int64)).to(device)

    def loss(self, outputs: Any, teacher: Any | None, y: Any, alpha: float, temperature: float,
             shape: tuple[int, ...]) -> Any:
        import torch.nn.functional as F

        masks = self._masks(y, outputs.device)
        truth = F.cross_entropy(outputs, masks, weight=_balanced(masks, outputs.shape[1]), ignore_index=255)
        if teacher is None:
            return truth
        t = temperature
        kd = F.kl_div(F.log_softmax(outputs / t, dim=1), F.softmax(teacher / t, dim=1),
                      reduction="none").sum(1).mean() * (t * t)
        return alpha * kd + (1 - alpha) * truth

    def validate(self, model: Any, loader: Any, device: Any, to_device: Any) -> float | None:
        import torch

        from edgekit.tasks.segmentation import confusion, miou_from_confusion

        model.eval()
        total = None
        with torch.no_grad():
            for x, y, *_ in loader:
                scores = model(to_device(x)).float()
                counts = confusion(scores.argmax(1).cpu().numpy(), self._masks(y, "cpu").numpy(), scores.shape[1])
                total = counts if total is None else total + counts
        return None if total is None else miou_from_confusion(total)[0]


class Detection(Objective):
    """An anchor-free assignment on the decoded output (FCOS-style centre sampling): every anchor
    within ``CENTRE_RADIUS`` strides of an object's centre and inside its box predicts it; class
    scores by binary cross-entropy (targets: IoU-free 1/0), boxes by GIoU plus L1 in strides.
    Distillation pulls scores to the teacher's and, where the teacher is confident, boxes to its
    boxes. Validates by mAP50-95 on the host's own decoding (:mod:`edgekit.tasks.boxes`)."""

    metric = "map50_95"
    CENTRE_RADIUS = 1.5

    def loss(self, outputs: Any, teacher: Any | None, y: Any, alpha: float, temperature: float,
             shape: tuple[int, ...]) -> Any:
        import torch
        import torch.nn.functional as F

        boxes, scores = outputs[:, :4], outputs[:, 4:].clamp(1e-6, 1 - 1e-6)
        centres, strides = _anchor_grid(shape, boxes.shape[2], boxes.device)
        truth_boxes, truth_scores, positive = self._targets(centres, strides, scores.shape[1], y, len(boxes))
        cls = F.binary_cross_entropy(scores, truth_scores, reduction="sum") / max(1, int(positive.sum()))
        box = torch.zeros((), device=outputs.device)
        if positive.any():
            mine = _xyxy(boxes.permute(0, 2, 1)[positive])
            theirs = truth_boxes[positive]
            per_stride = strides.expand(len(boxes), -1)[positive][:, None]
            box = (1 - _giou(mine, theirs)).mean() + 0.1 * ((mine - theirs).abs() / per_stride).mean()
        truth = cls + 2.0 * box
        if teacher is None:
            return truth
        t_boxes, t_scores = teacher[:, :4], teacher[:, 4:].clamp(1e-6, 1 - 1e-6)
        weight = t_scores.max(1).values  # [N, A]: boxes matter where the teacher sees an object
        kd_cls = F.binary_cross_entropy(scores, t_scores, reduction="sum") / max(1.0, float(weight.sum()))
        kd_box = ((boxes - t_boxes).abs().sum(1) / strides * weight).sum() / max(1.0, float(weight.sum()))
        return alpha * (kd_cls + kd_box) + (1 - alpha) * truth

    def _targets(self, centres: Any, strides: Any, classes: int, y: Any, n: int) -> tuple[Any, Any, Any]:
        """Per anchor: its object's x1y1x2y2, its one-hot class target, and whether it is positive."""
        import torch

        anchors, device = len(centres), centres.device
        target_boxes = torch.zeros(n, anchors, 4, device=device)
        target_scores = torch.zeros(n, classes, anchors, device=device)
        positive = torch.zeros(n, anchors, dtype=torch.bool, device=device)
        for i, annotation in enumerate(self._annotations(y)):
            if not len(annotation.boxes):
                continue
            gt = torch.as_tensor(annotation.boxes, dtype=torch.float32, device=device)  # [K,4]
            centre = (gt[:, :2] + gt[:, 2:]) / 2
            distance = (centres[:, None, :] - centre[None]).abs().max(-1).values  # [A,K]
            inside = ((centres[:, None, :] > gt[None, :, :2]) & (centres[:, None, :] < gt[None, :, 2:])).all(-1)
            near = (distance <= self.CENTRE_RADIUS * strides[:, None]) & inside
            nearest = torch.where(near, distance, torch.full_like(distance, float("inf"))).argmin(1)  # [A]
            hit = near.any(1)
            positive[i] = hit
            target_boxes[i, hit] = gt[nearest[hit]]
            cls = torch.as_tensor(annotation.classes, device=device)[nearest[hit]]
            target_scores[i, cls, hit.nonzero().squeeze(1)] = 1.0
        return target_boxes, target_scores, positive

    def validate(self, model: Any, loader: Any, device: Any, to_device: Any) -> float | None:
        import torch

        from edgekit.tasks.boxes import decode
        from edgekit.tasks.coco_map import coco_map

        model.eval()
        found, truth, classes = [], [], 0
        with torch.no_grad():
            for x, y, *_ in loader:
                raw = model(to_device(x)).float().cpu().numpy()
                classes = raw.shape[1] - 4
                found.extend(decode(raw))
                truth.extend((a.boxes, a.classes) for a in self._annotations(y))
        return coco_map(found, truth, classes)[0] if truth else None


def _balanced(masks: Any, classes: int) -> Any:
    """Per-class weights ~ 1/sqrt(pixel share) in this batch (1 for absent classes): background
    covers most pixels, and unweighted cross-entropy settles for "all background" for epochs."""
    import torch

    valid = masks[masks != 255]
    counts = torch.bincount(valid, minlength=classes)[:classes].float()
    share = counts / counts.sum().clamp(min=1)
    weight = torch.where(counts > 0, share.clamp(min=1e-6).rsqrt(), torch.ones_like(share))
    return weight / weight[counts > 0].mean().clamp(min=1e-6)


def _xyxy(xywh: Any) -> Any:
    import torch

    half = xywh[..., 2:4] / 2
    return torch.cat([xywh[..., :2] - half, xywh[..., :2] + half], -1)


def _giou(a: Any, b: Any) -> Any:
    """Generalised IoU of paired x1y1x2y2 boxes (Rezatofighi et al. 2019): a gradient even without overlap."""
    import torch

    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + 1e-7
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(1) + 1e-7
    return inter / union - (hull - union) / hull


def _anchor_grid(shape: tuple[int, ...], anchors: int, device: Any) -> tuple[Any, Any]:
    """Anchor centres [A,2] and strides [A] of an input of ``shape`` (N,C,H,W), as torch tensors."""
    import torch

    from edgekit.tasks.boxes import anchor_grid

    centres, strides = anchor_grid(int(shape[2]), int(shape[3]), anchors)
    return torch.from_numpy(centres).to(device), torch.from_numpy(strides).to(device)
