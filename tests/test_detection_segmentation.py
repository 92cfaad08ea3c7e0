"""Detection and segmentation: metrics against hand-computed values, the built-in canvases, pruning
that keeps a head's meaning, and one-line errors for data of the wrong task (real ONNX Runtime
sessions, COCO mAP by faster-coco-eval). A trained detector whose INT8 keeps its mAP where a naive
INT8 head does not: tests/test_ultralytics.py (YOLOv8n)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import open_dataset
from edgekit.tasks.boxes import Detections, anchor_grid, decode, decode_once, nms
from edgekit.tasks.coco_map import coco_map
from edgekit.tasks.segmentation import miou

EDGEKIT = [sys.executable, "-m", "edgekit"]


def test_coco_map_matches_hand_computed_iou_thresholds() -> None:
    truth = [(np.array([[10, 10, 30, 30]], np.float32), np.array([1]))]
    exact = [Detections(np.array([[10, 10, 30, 30]], np.float32), np.array([0.9]), np.array([1]))]
    assert coco_map(exact, truth, 3) == (100.0, 100.0)
    # shifted 2 px: IoU = 18*20 / (22*20) = 0.818, a match at thresholds 0.50 ... 0.80 (7 of 10)
    shifted = [Detections(np.array([[12, 10, 32, 30]], np.float32), np.array([0.9]), np.array([1]))]
    assert coco_map(shifted, truth, 3) == (70.0, 100.0)
    wrong_class = [Detections(np.array([[10, 10, 30, 30]], np.float32), np.array([0.9]), np.array([2]))]
    assert coco_map(wrong_class, truth, 3) == (0.0, 0.0)


def test_nms_is_class_aware_and_decode_reads_the_ultralytics_layout() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10]], np.float32)
    kept = nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 1]), 0.7)
    assert kept.tolist() == [0, 2]  # the second box overlaps the first (IoU 0.82) in its class; the third is another class
    raw = np.zeros((1, 4 + 2, 3), np.float32)  # cx, cy, w, h, score0, score1 per anchor
    raw[0, :, 0] = [20, 20, 10, 10, 0.9, 0.1]
    raw[0, :, 1] = [40, 40, 8, 8, 0.2, 0.6]
    found = decode(raw)[0]
    assert found.classes.tolist() == [0, 1]
    np.testing.assert_allclose(found.boxes, [[15, 15, 25, 25], [36, 36, 44, 44]])
    centres, strides = anchor_grid(64, 64, 64)
    assert centres[:2].tolist() == [[4, 4], [12, 4]] and set(strides) == {8}
    assert len(anchor_grid(640, 640, 8400)[0]) == 8400  # Ultralytics' 80x80 + 40x40 + 20x20


def test_decoding_once_never_answers_for_an_array_changed_in_place() -> None:
    """The decode cache (one eval scores, compares and counts outcomes on the same arrays) keys on the
    array's identity and its bytes: an output buffer a caller rewrites is decoded again."""
    raw = np.zeros((1, 4 + 2, 2), np.float32)
    raw[0, :, 0] = [20, 20, 10, 10, 0.9, 0.1]
    first = decode_once(raw)
    assert decode_once(raw) is first  # same array, same bytes: remembered
    raw[0, :, 0] = [40, 40, 8, 8, 0.2, 0.6]  # the same object, new contents
    again = decode_once(raw)
    assert again[0].classes.tolist() == [1]
    np.testing.assert_allclose(again[0].boxes, [[36, 36, 44, 44]])


def test_miou_and_pixel_accuracy_against_hand_computed_values() -> None:
    truth = np.array([[[0, 0, 1, 1], [0, 0, 1, 255]]])
    predicted = np.array([[[0, 1, 1, 1], [0, 0, 1, 0]]])
    # class 0: hits 3, union 4 -> 0.75; class 1: hits 3, union 4 -> 0.75; the ignored pixel is not counted
    assert miou(predicted, truth, 2) == (75.0, 85.714)


def test_the_canvases_are_deterministic_and_masks_agree_with_boxes() -> None:
    detect = open_dataset("builtin:digits-detect/val", "digits-canvas")
    again = open_dataset("builtin:digits-detect/val", "digits-canvas")
    seg = open_dataset("builtin:digits-seg/val", "digits-canvas")
    assert len(detect) == len(seg) == 300
    for index in (0, 7, 299):
        np.testing.assert_array_equal(detect.get(index)[0], again.get(index)[0])
        np.testing.assert_array_equal(detect.get(index)[0], seg.get(index)[0])  # the same canvas
        boxes, mask = detect.annotation(index), seg.annotation(index)
        assert 1 <= len(boxes.boxes) <= 3 and (boxes.boxes >= 0).all() and (boxes.boxes <= 64).all()
        for (x1, y1, x2, y2), cls in zip(boxes.boxes.astype(int), boxes.classes):
            inside = mask[y1:y2, x1:x2]
            assert (inside == cls + 1).sum() > 10  # the box is tight around its digit's ink
        outside = np.ones_like(mask, bool)
        for x1, y1, x2, y2 in boxes.boxes.astype(int):
            outside[y1:y2, x1:x2] = False
        assert (mask[outside] == 0).all()
    with pytest.raises(Exception, match="centre-crops"):
        open_dataset("builtin:digits-detect/val", "imagenet")


def test_pruning_a_detector_keeps_its_box_and_class_widths() -> None:
    import torch

    from edgekit.prune import prune
    from edgekit.zoo import digits_detector

    model = digits_detector()
    result = prune(model, torch.zeros(1, 1, 64, 64), ratio=0.5, progress=None)
    assert result["macs_after"] < 0.7 * result["macs_before"]
    assert model.box_branch[-1].out_channels == 4 and model.class_branch[-1].out_channels == 10
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 14, 64)


def test_eval_of_a_detector_on_classification_data_is_one_line(tmp_path: Path, detector_onnx: Path) -> None:
    done = subprocess.run([*EDGEKIT, "eval", str(detector_onnx), "--data", "builtin:digits-seg/test", "--recipe",
                           "digits-canvas", "--task", "detection"], capture_output=True, text=True)
    assert done.returncode == 2 and "segmentation annotations" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edgekit's digits detector (untrained: what is checked here is the data, not the detections), exported."""
    import torch

    from edgekit.export import export_onnx
    from edgekit.zoo import digits_detector

    torch.manual_seed(0)
    model = digits_detector()
    out = tmp_path_factory.mktemp("detector") / "fp32.onnx"
    export_onnx(model.eval(), torch.zeros(1, 1, 64, 64), out)
    return out


def test_a_segmenter_is_scored_by_miou_and_a_data_size_the_model_cannot_take_is_one_line(tmp_path: Path) -> None:
    import torch

    from edgekit.export import export_onnx
    from edgekit.zoo import digits_segmenter

    torch.manual_seed(0)
    onnx = tmp_path / "seg.onnx"
    export_onnx(digits_segmenter().eval(), torch.zeros(1, 1, 64, 64), onnx)
    out = tmp_path / "seg.eval.json"
    done = subprocess.run([*EDGEKIT, "eval", str(onnx), "--data", "builtin:digits-seg/test", "--recipe",
                           "digits-canvas", "--task", "segmentation", "--num-samples", "20", "--reference", str(onnx),
                           "--json", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert document["task"] == "segmentation" and 0 <= document["miou"] <= 100 and document["agreement"] == 100
    assert document["pixel_accuracy"] is not None
    recipe = tmp_path / "canvas48.yaml"  # 48x48 images and masks for a 64x64 model
    recipe.write_text("name: canvas48\nsize: [48, 48]\ncolor_mode: gray\nscale: 0.00392156862745098\n"
                      "mean: [0.0]\nstd: [1.0]\n")
    done = subprocess.run([*EDGEKIT, "eval", str(onnx), "--data", "builtin:digits-seg/test", "--recipe", str(recipe),
                           "--task", "segmentation", "--num-samples", "5"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert str(onnx) in done.stderr and "check --recipe" in done.stderr
