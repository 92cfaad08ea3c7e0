"""Detector post-processing on the host, in numpy: one code path for every runtime's outputs.

FP32 ONNX, INT8 ONNX, INT8 TFLite and on-device outputs all arrive as the same raw tensor (the
Ultralytics YOLOv8/11 layout ``[N, 4 + classes, anchors]``: box centre x, centre y, width, height
in input pixels, then per-class scores in 0-1) and are decoded and suppressed here, so a
difference in mAP between two artifacts is a difference in their outputs, never in their
post-processing.
"""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

CONF_THRESHOLD = 0.001  # what COCO-style mAP is computed at (Ultralytics' val default): the curve needs the tail
IOU_THRESHOLD = 0.7  # class-aware NMS overlap (Ultralytics' val default)
MAX_DETECTIONS = 300  # per image, after NMS
CONFIDENT = 0.25  # a detection a user would act on (Ultralytics' predict default): agreement counts these


@dataclasses.dataclass(frozen=True)
class Detections:
    """One image's detections, best first: ``boxes`` [K,4] x1,y1,x2,y2 pixels, ``scores`` [K], ``classes`` [K]."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def confident(self, threshold: float = CONFIDENT) -> "Detections":
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])


def decode(raw: np.ndarray, conf: float = CONF_THRESHOLD, iou: float = IOU_THRESHOLD,
           max_det: int = MAX_DETECTIONS) -> list[Detections]:
    """Per image of ``raw`` [N, 4+C, A]: best class per anchor, score filter, class-aware NMS."""
    raw = np.asarray(raw, np.float32)
    found = []
    for image in raw:
        xywh, scores = image[:4].T, image[4:].T  # [A,4], [A,C]
        classes = scores.argmax(1)
        best = scores[np.arange(len(scores)), classes]
        keep = np.flatnonzero(best > conf)
        keep = keep[np.argsort(-best[keep], kind="stable")][: 30 * max_det]  # NMS cost bound
        boxes = xywh_to_xyxy(xywh[keep])
        kept = nms(boxes, best[keep], classes[keep], iou)[:max_det]
        found.append(Detections(boxes[kept], best[keep][kept], classes[keep][kept].astype(np.int64)))
    return found


_DECODED: list[tuple[np.ndarray, bytes, list[Detections]]] = []  # the last two arrays decoded, with a digest of their bytes


def decode_once(raw: np.ndarray) -> list[Detections]:
    """:func:`decode` with the default thresholds, remembered for the last two arrays (outputs and reference): one eval scores,
    compares and counts outcomes on the same outputs and reference, and NMS over every image is the
    cost. Keyed by identity (the array object is kept, so its id cannot be reused meanwhile) *and* a
    digest of its bytes, so an array changed in place is decoded again, never answered stale
    (hashing is ~1 GB/s; NMS over a few hundred images is seconds)."""
    digest = _digest(raw)
    for array, seen, found in _DECODED:
        if array is raw and seen == digest:
            return found
    found = decode(raw)
    _DECODED.append((raw, digest, found))
    del _DECODED[:-2]
    return found


def _digest(raw: np.ndarray) -> bytes:
    array = np.ascontiguousarray(raw)
    return hashlib.blake2b(array.view(np.uint8).reshape(-1), digest_size=16).digest() + repr((array.shape, array.dtype.str)).encode()


def xywh_to_xyxy(xywh: np.ndarray) -> np.ndarray:
    half = xywh[:, 2:4] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of x1,y1,x2,y2 boxes: [len(a), len(b)]."""
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy class-aware NMS, best score first (boxes of different classes never
    suppress each other: offset per class, as torchvision's batched_nms does)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    offset = classes[:, None].astype(np.float32) * (float(boxes.max()) + 1.0)
    shifted = boxes + offset
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while len(order):
        first = order[0]
        kept.append(int(first))
        if len(order) == 1:
            break
        overlap = iou_matrix(shifted[first:first + 1], shifted[order[1:]])[0]
        order = order[1:][overlap <= iou]
    return np.asarray(kept, np.int64)


def same_detections(found: Detections, reference: Detections, iou: float = 0.5) -> bool:
    """Whether two images' confident detections match one to one (same class, IoU >= ``iou``):
    what a user of the detector would see as "the same answer"."""
    a, b = found.confident(), reference.confident()
    if len(a.boxes) != len(b.boxes):
        return False
    if not len(a.boxes):
        return True
    overlap = iou_matrix(a.boxes, b.boxes)
    overlap[a.classes[:, None] != b.classes[None, :]] = 0
    taken = np.zeros(len(b.boxes), bool)
    for i in np.argsort(-a.scores, kind="stable"):
        candidates = np.where(taken, -1.0, overlap[i])
        j = int(candidates.argmax())
        if candidates[j] < iou:
            return False
        taken[j] = True
    return True


STRIDE_SETS = ((8,), (16,), (32,), (4,), (8, 16, 32), (8, 16, 32, 64), (16, 32, 64))


def anchor_grid(height: int, width: int, anchors: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres [A,2] (x, y pixels) and strides [A] of a YOLO-layout output with ``anchors``
    columns for an input of ``height`` x ``width``: level by level, row-major, centre (j + 0.5) * s,
    as Ultralytics' ``make_anchors`` and edgekit's detectors lay them out."""
    for strides in STRIDE_SETS:
        shapes = [(-(-height // s), -(-width // s)) for s in strides]
        if sum(h * w for h, w in shapes) == anchors:
            centres, per_anchor = [], []
            for s, (h, w) in zip(strides, shapes):
                ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
                centres.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], 1))
                per_anchor.append(np.full(h * w, s))
            return np.concatenate(centres).astype(np.float32), np.concatenate(per_anchor).astype(np.float32)
    raise ValueError(f"{anchors} anchors match no stride set {STRIDE_SETS} for a {height}x{width} input")
