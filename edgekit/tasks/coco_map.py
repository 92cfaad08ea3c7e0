"""COCO mAP50-95 and mAP50 with faster-coco-eval (pycocotools' algorithm, a C++ core): the figures
detector users compare against Ultralytics and torchvision, computed by the library they trust."""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np

from edgekit.tasks.boxes import Detections


def coco_map(found: Sequence[Detections], truth: Sequence[tuple[np.ndarray, np.ndarray]],
             num_classes: int) -> tuple[float, float]:
    """(mAP50-95, mAP50) in percent of ``found`` against ``truth`` ((boxes x1y1x2y2, classes) per
    image, in the same order); 0.0 where nothing matches, NaN-free when an image has no objects."""
    from faster_coco_eval import COCO, COCOeval_faster

    images = [{"id": i + 1, "width": 1, "height": 1} for i in range(len(truth))]
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    annotations = []
    for i, (boxes, classes) in enumerate(truth):
        for box, cls in zip(np.asarray(boxes, np.float64), np.asarray(classes)):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
    if not annotations:
        return 0.0, 0.0
    detections = []
    for i, det in enumerate(found):
        for box, score, cls in zip(det.boxes.astype(np.float64), det.scores, det.classes):
            detections.append({"image_id": i + 1, "category_id": int(cls) + 1, "score": float(score),
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    if not detections:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        ground = COCO({"images": images, "categories": categories, "annotations": annotations})
        results = ground.loadRes(detections)
        evaluation = COCOeval_faster(ground, results, iouType="bbox", print_function=lambda *_: None)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    map50_95, map50 = (max(0.0, float(v)) for v in evaluation.stats[:2])
    return round(100 * map50_95, 3), round(100 * map50, 3)
