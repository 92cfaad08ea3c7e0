"""Semantic segmentation: one ``[N, classes, H, W]`` output of per-pixel class scores at the input's
resolution (torchvision's LR-ASPP and DeepLabV3 heads, edgekit's digits segmenter); mIoU and pixel
accuracy from one confusion matrix over every evaluated pixel (255 in a mask = ignore, as VOC).

Without labels the fidelity figures compare a variant with the reference's own per-pixel classes:
*agreement* is the % of pixels with the same class, *miou_vs_reference* the mIoU against them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.datasets import Dataset
from edgekit.errors import EdgekitError
from edgekit.tasks.base import EvalData, Metric, Task, annotations_of, output_cosine

IGNORE = 255


class Segmentation(Task):
    name = "segmentation"
    metrics = ("miou", "pixel_accuracy", "agreement", "miou_vs_reference", "cosine")
    primary = Metric("miou", higher_is_better=True)
    fidelity = Metric("agreement", higher_is_better=True)
    formats = ("folder", "builtin")

    def targets_of(self, dataset: Dataset, labels: np.ndarray) -> np.ndarray | None:
        masks = annotations_of(dataset, labels, self.name)
        return None if masks is None else np.stack(masks).astype(np.int64)

    def check_outputs(self, path: Path, runner: Any) -> None:
        shape = runner.outputs[0].shape if runner.outputs else None
        if shape is None or len(shape) != 4:
            raise EdgekitError(f"{path}: output shape {shape if shape is not None else 'none'}; the segmentation task "
                               "needs [N, classes, H, W] per-pixel scores")

    def check_predictions(self, path: Path, outputs: np.ndarray, data: EvalData) -> None:
        if data.targets is None:
            return
        if tuple(outputs.shape[2:]) != tuple(data.targets.shape[1:]):
            raise EdgekitError(f"{path}: outputs {outputs.shape[2]}x{outputs.shape[3]} masks, the data's are "
                               f"{data.targets.shape[1]}x{data.targets.shape[2]} (check --recipe)")
        valid = data.targets[data.targets != IGNORE]
        if valid.size and int(valid.max()) >= outputs.shape[1]:
            raise EdgekitError(f"{data.source}: has class id {int(valid.max())} but {path} scores "
                               f"{outputs.shape[1]} classes (wrong data set or model?)")

    def score(self, outputs: np.ndarray, data: EvalData, reference: np.ndarray | None) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(self.metrics)
        classes = outputs.shape[1]
        predicted = outputs.argmax(1)
        if data.targets is not None:
            scores["miou"], scores["pixel_accuracy"] = miou(predicted, data.targets, classes)
        if reference is not None:
            expected = reference.argmax(1)
            scores["agreement"] = round(100.0 * float(np.mean(predicted == expected)), 3)
            scores["miou_vs_reference"] = miou(predicted, expected, classes)[0]
            scores["cosine"] = round(output_cosine(outputs, reference), 6)
        return scores


    agreement_kind = "pixel"

    def fidelity_pair(self, outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
        """Logit cosine and the % of pixels whose class equals the reference's."""
        return output_cosine(outputs, reference), 100.0 * float(np.mean(outputs.argmax(1) == reference.argmax(1)))


def confusion(predicted: np.ndarray, truth: np.ndarray, classes: int) -> np.ndarray:
    """[truth, predicted] pixel counts over the pixels that are not IGNORE."""
    keep = truth != IGNORE
    index = truth[keep].astype(np.int64) * classes + predicted[keep].astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


def miou(predicted: np.ndarray, truth: np.ndarray, classes: int) -> tuple[float, float]:
    """(mIoU, pixel accuracy) in percent; the mean runs over classes present in truth or prediction
    (a class absent from both has no IoU, as in torchmetrics' and mmseg's convention)."""
    return miou_from_confusion(confusion(predicted, truth, classes))


def miou_from_confusion(counts: np.ndarray) -> tuple[float, float]:
    """(mIoU, pixel accuracy) in percent of a [truth, predicted] pixel-count matrix (summed over batches)."""
    matrix = counts.astype(np.float64)
    hits = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - hits
    present = union > 0
    mean_iou = float(np.mean(hits[present] / union[present])) if present.any() else 0.0
    total = matrix.sum()
    return round(100 * mean_iou, 3), round(100 * float(hits.sum() / total) if total else 0.0, 3)
