"""Object detection: one raw output in the Ultralytics YOLOv8/11 layout ``[N, 4 + classes, anchors]``
(decoded boxes cx,cy,w,h in input pixels, then class scores), decoded and suppressed on the host
(:mod:`edgekit.tasks.boxes`) and scored with COCO mAP (:mod:`edgekit.tasks.coco_map`).

Without labels the fidelity figures compare a variant with the reference's own detections:
*agreement* is the % of images whose confident detections match the reference's one to one, and
*map_vs_reference* is mAP50-95 taking the reference's confident detections as ground truth.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.datasets import Dataset
from edgekit.errors import EdgekitError
from edgekit.tasks.base import EvalData, Metric, Task, annotations_of, output_cosine
from edgekit.tasks.boxes import decode_once as decode, same_detections
from edgekit.tasks.coco_map import coco_map


class Detection(Task):
    name = "detection"
    metrics = ("map50_95", "map50", "agreement", "map_vs_reference", "cosine")
    primary = Metric("map50_95", higher_is_better=True)
    fidelity = Metric("agreement", higher_is_better=True)
    formats = ("yolo", "coco", "builtin", "folder")

    def targets_of(self, dataset: Dataset, labels: np.ndarray) -> list[Any] | None:
        return annotations_of(dataset, labels, self.name)

    def check_outputs(self, path: Path, runner: Any) -> None:
        """[N, 4 + classes, anchors]: what Ultralytics' detectors and edgekit's export make."""
        shape = runner.outputs[0].shape if runner.outputs else None
        if shape is None or len(shape) != 3 or not isinstance(shape[1], int) or shape[1] < 5:
            raise EdgekitError(f"{path}: output shape {shape if shape is not None else 'none'}; the detection task "
                               "needs [N, 4 + classes, anchors] (boxes cx,cy,w,h in input pixels, then class scores)")

    def check_predictions(self, path: Path, outputs: np.ndarray, data: EvalData) -> None:
        classes = outputs.shape[1] - 4
        if data.targets is not None:
            seen = max((int(t.classes.max()) for t in data.targets if len(t.classes)), default=-1)
            if seen >= classes:
                raise EdgekitError(f"{data.source}: has class id {seen} but {path} scores {classes} classes "
                                   "(wrong data set or model?)")

    def score(self, outputs: np.ndarray, data: EvalData, reference: np.ndarray | None) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(self.metrics)
        found = decode(outputs)
        classes = outputs.shape[1] - 4
        if data.targets is not None:
            truth = [(t.boxes, t.classes) for t in data.targets]
            scores["map50_95"], scores["map50"] = coco_map(found, truth, classes)
        if reference is not None:
            expected = decode(reference)
            scores["agreement"] = _percent([same_detections(f, e) for f, e in zip(found, expected)])
            pseudo = [(e.confident().boxes, e.confident().classes) for e in expected]
            scores["map_vs_reference"] = coco_map(found, pseudo, classes)[0]
            scores["cosine"] = round(output_cosine(outputs, reference), 6)
        return scores

    agreement_kind = "detection (mAP50-95 vs FP32's)"
    decodes_in_graph = True

    def fidelity_pair(self, outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
        """The worse cosine of the two parts (box values run to hundreds of pixels, scores to 1: one
        cosine over both would not see the scores collapse, the classic INT8 detector failure) and
        mAP50-95 against the reference's confident detections: continuous, where "the same boxes
        on this image" flips on a few dozen images by chance."""
        cosine = min(output_cosine(outputs[:, :4], reference[:, :4]), output_cosine(outputs[:, 4:], reference[:, 4:]))
        pseudo = [(e.confident().boxes, e.confident().classes) for e in decode(reference)]
        return cosine, coco_map(decode(outputs), pseudo, outputs.shape[1] - 4)[0]

    def outcomes(self, outputs: np.ndarray, data: EvalData, reference: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per image: the same confident detections as the reference's (a proportion, so paired intervals)."""
        if reference is None:
            return {}
        return {"agreement": np.asarray([same_detections(f, e) for f, e in zip(decode(outputs), decode(reference))])}


def _percent(hits: list[bool]) -> float:
    return round(100.0 * float(np.mean(hits)), 3) if hits else 0.0
