"""Detection and segmentation data: YOLO, COCO and mask folders written to disk, the built-in canvas
sets, and one-line errors naming the file (and line) of every bad annotation."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.data import (AnnotatedDataset, Boxes, annotated_task, calibration_tensors, fingerprint, iter_batches, load_recipe, natural_recipe, open_dataset,
                          sample_indices)
from edgekit.data.base import _digits_split
from edgekit.data.canvas import CANVAS_SIDE, INK, _digits, _pool
from edgekit.errors import EdgekitError

# the images below are 100 wide, 50 high; this recipe stretches them to 50 wide, 100 high (x * 0.5, y * 2)
STRETCH = "name: tall\nsize: [100, 50]\ncolor_mode: rgb\ngray_to_rgb: true\nmean: [0]\nstd: [1]\n"


@pytest.fixture
def tall(tmp_path: Path):
    path = tmp_path / "tall.yaml"
    path.write_text(STRETCH)
    return load_recipe(path)


def image(path: Path, size: tuple[int, int] = (100, 50), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def yolo_set(root: Path, names: str = "{0: cat, 1: dog}") -> Path:
    image(root / "images" / "val" / "a.png")
    image(root / "images" / "val" / "b.jpg")  # no label file: no objects
    image(root / "images" / "train" / "c.png")
    text(root / "labels" / "val" / "a.txt", "1 0.5 0.5 0.2 0.4\n\n0 0.1 0.2 0.2 0.4\n")
    text(root / "labels" / "train" / "c.txt", "0 0.5 0.5 1.0 1.0\n")
    return text(root / "data.yaml", f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")


def test_yolo_yaml_boxes_in_model_pixels(tmp_path: Path, tall) -> None:
    data = yolo_set(tmp_path / "ds")
    val = open_dataset(data, tall)
    assert isinstance(val, AnnotatedDataset) and val.task == "detection" and val.classes == ["cat", "dog"]
    assert len(val) == 2 and val.labels is None
    boxes = val.annotation(0)
    # cx 50 cy 25 w 20 h 20 in the 100x50 image -> x1 40 y1 15 x2 60 y2 35 -> x * 0.5, y * 2
    np.testing.assert_array_equal(boxes.boxes, np.asarray([[20, 30, 30, 70], [0, 0, 10, 40]], np.float32))
    assert boxes.classes.tolist() == [1, 0] and boxes.classes.dtype == np.int64 and boxes.boxes.dtype == np.float32
    assert len(val.annotation(1)) == 0 and val.annotation(1).boxes.shape == (0, 4)
    x, y = val.get(1)
    assert x.shape == (3, 100, 50) and y == 1
    train = open_dataset(f"{data}#train", tall)
    assert len(train) == 1 and train.annotation(0).boxes.tolist() == [[0, 0, 50, 100]]
    batches = list(iter_batches(val, [1, 0], 8))
    assert batches[0][0].shape == (2, 3, 100, 50) and batches[0][1].tolist() == [1, 0]
    assert sample_indices(val, 1, seed=0) in ([0], [1])  # unstratified: no labels
    assert annotated_task(data) == annotated_task(f"{data}#train") == annotated_task(tmp_path / "ds") == "detection"
    assert annotated_task("builtin:digits-seg/val") == "segmentation" and annotated_task("builtin:digits") is None
    assert annotated_task(tmp_path / "ds" / "images") is None  # a plain image folder
    # names as a list; path missing: relative to the YAML's folder
    text(data, "train: images/train\nval: [images/val]\nnames: [cat, dog]\n")
    assert open_dataset(data, tall).classes == ["cat", "dog"]


def test_yolo_folder_and_identity_follow_the_labels(tmp_path: Path, tall) -> None:
    root = tmp_path / "ds"
    yolo_set(root)
    (root / "data.yaml").unlink()
    plain = open_dataset(root, tall)  # images/ + labels/, no names: ids 0..max
    assert len(plain) == 3 and plain.classes == ["0", "1"]
    text(root / "classes.txt", "cat\ndog\nbird\n")
    named = open_dataset(f"{root}#val", tall)
    assert named.classes == ["cat", "dog", "bird"] and len(named) == 2
    before, printed = named.identity([0, 1]), fingerprint(f"{root}#val")
    text(root / "labels" / "val" / "a.txt", "1 0.5 0.5 0.2 0.2\n")
    assert open_dataset(f"{root}#val", tall).identity([0, 1]) != before
    assert fingerprint(f"{root}#val") != printed


def test_coco_json(tmp_path: Path, tall) -> None:
    image(tmp_path / "images" / "a.png")
    image(tmp_path / "b.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}, {"id": 2, "file_name": "b.png"}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 5, 20, 10], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 50], "iscrowd": 1},
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [50, 25, 50, 25]},
        ],
    }
    path = text(tmp_path / "instances.json", json.dumps(coco))
    data = open_dataset(path, tall)
    assert data.classes == ["cat", "dog"] and len(data) == 2
    first = data.annotation(0)
    assert first.boxes.tolist() == [[5, 10, 15, 30]] and first.classes.tolist() == [1]  # crowd left out
    second = data.annotation(1)  # no width/height in the JSON: read from the image
    assert second.boxes.tolist() == [[25, 50, 50, 100]] and second.classes.tolist() == [0]
    coco["annotations"][2]["bbox"] = [50, 25, 60, 25]  # past the right edge of b.png, known only from its header
    text(path, json.dumps(coco))
    with pytest.raises(EdgekitError, match=re_escape(f"{path}: image b.png: a bbox reaches outside the 100x50 image")):
        open_dataset(path, tall).annotation(1)


def write_masks(root: Path, layout: str = "plain") -> None:
    images, masks = ("images", "masks") if layout == "plain" else ("JPEGImages", "SegmentationClass")
    image(root / images / "x.png", (4, 2))
    palette = Image.fromarray(np.asarray([[0, 1, 2, 255], [2, 2, 0, 0]], np.uint8), "P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [255, 255, 255] * 253)
    (root / masks).mkdir(parents=True)
    palette.save(root / masks / "x.png")
    image(root / images / "y.jpg", (4, 2))
    Image.fromarray(np.asarray([[1, 1, 0, 0], [0, 0, 1, 255]], np.uint8), "L").save(root / masks / "y.png")


def test_segmentation_folders(tmp_path: Path) -> None:
    recipe = text(tmp_path / "r.yaml", "name: seg\nsize: [4, 8]\nmean: [0]\nstd: [1]\n")
    root = tmp_path / "seg"
    write_masks(root)
    data = open_dataset(root, recipe)
    assert data.task == "segmentation" and len(data) == 2
    assert data.classes == ["0", "1", "2"]  # no classes.txt: 0..max over the masks, 255 ignored
    mask = data.annotation(0)
    assert mask.dtype == np.int64 and mask.shape == (4, 8)  # 4x2 -> 8x4, nearest: each pixel twice each way
    np.testing.assert_array_equal(mask, np.repeat(np.repeat(np.asarray([[0, 1, 2, 255], [2, 2, 0, 0]]), 2, 0), 2, 1))
    assert set(np.unique(data.annotation(1)).tolist()) == {0, 1, 255}
    x, y = data.get(1)
    assert x.shape == (3, 4, 8) and y == 1
    text(root / "classes.txt", "background\nroad\ncar\n")
    assert open_dataset(root, recipe).classes == ["background", "road", "car"]
    voc = tmp_path / "voc"
    write_masks(voc, "voc")
    image(voc / "JPEGImages" / "unlabelled.jpg", (4, 2))  # VOC has more images than masks: the masks choose
    assert len(open_dataset(voc, recipe)) == 2
    text(voc / "ImageSets" / "Segmentation" / "val.txt", "y\n")
    only = open_dataset(f"{voc}#val", recipe)
    assert len(only) == 1 and only.files[0].name == "y.jpg"


def test_a_recipe_that_crops_is_refused(tmp_path: Path) -> None:
    yolo_set(tmp_path / "ds")
    with pytest.raises(EdgekitError, match=r"recipe 'imagenet' .* \(resize: null, center_crop: false\)"):
        open_dataset(tmp_path / "ds" / "data.yaml", "imagenet")


YOLO_BAD = [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", "a.txt:3: expected 'class cx cy w h', got '0 0.5 0.5 0.2'"),
    ("0 0.5 half 0.2 0.2\n", "a.txt:1: expected 'class cx cy w h'"),
    ("0 0.5 0.5 0.2 0.2\n12 0.5 0.5 0.2 0.2\n", "a.txt:2: class id 12, the data has 10 classes (0-9)"),
    ("1.5 0.5 0.5 0.2 0.2\n", "a.txt:1: class id 1.5 is not a non-negative integer"),
    ("\n\n\n0 0.9 0.5 0.4 0.2\n", "a.txt:4: box cx 0.9 cy 0.5 w 0.4 h 0.2 reaches outside the image"),
    ("0 0.5 0.5 0 0.2\n", "a.txt:1: box width 0 height 0.2; both must be positive"),
]


@pytest.mark.parametrize(("labels", "message"), YOLO_BAD)
def test_bad_yolo_label_names_file_and_line(labels: str, message: str, tmp_path: Path, tall) -> None:
    image(tmp_path / "images" / "a.png")
    text(tmp_path / "labels" / "a.txt", labels)
    text(tmp_path / "data.yaml", f"val: images\nnames: {[str(i) for i in range(10)]}\n")
    with pytest.raises(EdgekitError) as info:
        open_dataset(tmp_path / "data.yaml", tall)
    assert f"{tmp_path / 'labels' / message}" in str(info.value) and "\n" not in str(info.value)


def test_bad_yolo_yaml_and_missing_images(tmp_path: Path, tall) -> None:
    image(tmp_path / "images" / "a.png")
    text(tmp_path / "list.txt", "images/a.png\nimages/gone.png\n")
    for content, message in [
        ("val: list.txt\nnames: [a]\n", f"{tmp_path / 'list.txt'}:2: image {tmp_path / 'images' / 'gone.png'} not found"),
        ("val: nowhere\nnames: [a]\n", "data.yaml: split 'val': "),
        ("train: images\nnames: [a]\n", "data.yaml: no 'val' split (it has train)"),
        ("val: images\nnames: {0: a, 2: b}\n", "data.yaml: key 'names': ids must be 0..1"),
        ("val: images\n", "data.yaml: key 'names'"),
    ]:
        text(tmp_path / "data.yaml", content)
        with pytest.raises(EdgekitError, match=re_escape(message)):
            open_dataset(tmp_path / "data.yaml", tall)


def re_escape(message: str) -> str:
    import re

    return re.escape(message)


def coco_with(tmp_path: Path, **change) -> Path:
    image(tmp_path / "a.png")
    ann = {"id": 5, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], **change.pop("ann", {})}
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 50}],
            "categories": [{"id": 1, "name": "a"}], "annotations": [ann], **change}
    return text(tmp_path / "ann.json", json.dumps(data))


@pytest.mark.parametrize(("change", "message"), [
    ({"ann": {"bbox": [90, 10, 20, 20]}},
     "ann.json: annotation 5: bbox [90.0, 10.0, 20.0, 20.0] is empty or outside the 100x50 image"),
    ({"ann": {"bbox": [10, 10, 0, 20]}}, "ann.json: annotation 5: bbox [10.0, 10.0, 0.0, 20.0] is empty"),
    ({"ann": {"category_id": 9}}, "ann.json: annotation 5: category_id 9 is not in 'categories'"),
    ({"ann": {"image_id": 4}}, "ann.json: annotation 5: image_id 4 is not in 'images'"),
    ({"images": [{"id": 1, "file_name": "gone.png"}]}, "ann.json: image 1 'gone.png' not found"),
])
def test_bad_coco_names_file_and_annotation(change: dict, message: str, tmp_path: Path, tall) -> None:
    path = coco_with(tmp_path, **change)
    with pytest.raises(EdgekitError) as info:
        open_dataset(path, tall)
    assert message in str(info.value) and str(path) in str(info.value)


def test_bad_masks_name_the_file(tmp_path: Path) -> None:
    recipe = text(tmp_path / "r.yaml", "name: seg\nsize: [4, 8]\nmean: [0]\nstd: [1]\n")
    root = tmp_path / "seg"
    write_masks(root)
    image(root / "images" / "z.png", (4, 2))
    with pytest.raises(EdgekitError, match=re_escape(f"{root / 'masks' / 'z.png'}: mask missing for image")):
        open_dataset(root, recipe)
    (root / "images" / "z.png").unlink()
    image(root / "images" / "y.jpg", (6, 2))  # now larger than its mask
    data = open_dataset(root, recipe)
    with pytest.raises(EdgekitError, match=re_escape(f"{root / 'masks' / 'y.png'}: mask 4x2, image 6x2")):
        data.annotation(1)
    Image.new("RGB", (4, 2)).save(root / "masks" / "y.png")
    with pytest.raises(EdgekitError, match=re_escape(f"{root / 'masks' / 'y.png'}: mask mode RGB; a class mask is a palette")):
        data.annotation(1)
    text(root / "classes.txt", "background\nroad\n")  # mask x.png uses class 2
    with pytest.raises(EdgekitError, match=re_escape(f"{root / 'masks' / 'x.png'}: class id 2, the data has 2 classes")):
        open_dataset(root, recipe).annotation(0)


# -- the built-in canvas sets ---------------------------------------------------------------------


def test_builtin_canvas_sets_are_quick_deterministic_and_split_by_digit() -> None:
    start = time.perf_counter()
    val = open_dataset("builtin:digits-detect/val", "digits-canvas")
    assert time.perf_counter() - start < 1.0
    assert natural_recipe("builtin:digits-detect/val") == "digits-canvas" == natural_recipe("builtin:digits-seg")
    assert natural_recipe("builtin:digits") == "digits" and natural_recipe("some/folder") is None
    sizes = {s: len(open_dataset(f"builtin:digits-detect/{s}", "digits-canvas")) for s in ("train", "val", "test")}
    assert sizes == {"train": 1500, "val": 300, "test": 300}
    assert len(open_dataset("builtin:digits-seg", "digits-canvas")) == 2100
    assert val.classes == [str(d) for d in range(10)] and val.task == "detection"
    again = open_dataset("builtin:digits-detect/val", "digits-canvas")
    np.testing.assert_array_equal(val.get(7)[0], again.get(7)[0])
    np.testing.assert_array_equal(val.annotation(7).boxes, again.annotation(7).boxes)
    assert not np.array_equal(val.get(7)[0], val.get(8)[0])
    used = {}
    for split in ("train", "val", "test"):
        data = open_dataset(f"builtin:digits-detect/{split}", "digits-canvas")
        used[split] = {int(s) for i in range(0, len(data), 5) for s in data.canvas(i).sources}
        assert used[split] <= set(_pool(split).tolist())
    assert not (used["train"] & used["val"]) and not (used["train"] & used["test"]) and not (used["val"] & used["test"])
    targets = _digits()[1]
    assert set(_pool("val").tolist()) == set(_digits_split(targets, "val").tolist())  # the builtin:digits split
    with pytest.raises(EdgekitError, match="builtin:digits-seg/dev: unknown split"):
        open_dataset("builtin:digits-seg/dev", "digits-canvas")


def test_canvas_boxes_are_tight_around_the_ink_and_masks_agree() -> None:
    detect = open_dataset("builtin:digits-detect/test", "digits-canvas")
    seg = open_dataset("builtin:digits-seg/test", "digits-canvas")
    assert seg.classes[0] == "background" and len(seg.classes) == 11
    counts = []
    for i in range(0, 300, 3):
        boxes, mask, canvas = detect.annotation(i), seg.annotation(i), detect.canvas(i)
        assert isinstance(boxes, Boxes) and mask.shape == (CANVAS_SIDE, CANVAS_SIDE) and mask.dtype == np.int64
        counts.append(len(boxes))
        covered = np.zeros_like(mask, bool)
        for (x1, y1, x2, y2), digit in zip(boxes.boxes.astype(int), boxes.classes):
            assert 1 <= x2 - x1 <= 28 and 1 <= y2 - y1 <= 28
            inside = mask[y1:y2, x1:x2]
            assert set(np.unique(inside).tolist()) <= {0, digit + 1}
            ink = inside == digit + 1
            assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()  # tight on all 4 sides
            covered[y1:y2, x1:x2] = True
        assert not mask[~covered].any()  # every ink pixel is in a box
        assert (canvas.image[mask > 0] > INK * 255 * 0.5).all()  # ink is bright ...
        assert canvas.image[~covered].max() < 0.5 * 255  # ... and outside the boxes the canvas is dark
        for a in range(len(boxes)):  # no two objects overlap
            for b in range(a + 1, len(boxes)):
                (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = boxes.boxes[a], boxes.boxes[b]
                assert min(ax2, bx2) <= max(ax1, bx1) or min(ay2, by2) <= max(ay1, by1)
    assert set(counts) == {1, 2, 3}


def test_canvas_batches_and_other_stretch_recipes(tmp_path: Path) -> None:
    seg = open_dataset("builtin:digits-seg/val", "digits-canvas")
    batches = list(iter_batches(seg, range(10), 4))
    assert [b[0].shape for b in batches] == [(4, 1, 64, 64), (4, 1, 64, 64), (2, 1, 64, 64)]
    assert np.concatenate([b[1] for b in batches]).tolist() == list(range(10))
    x = batches[0][0]
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    small = open_dataset("builtin:digits-detect/val", "digits")  # 3x32x32: boxes halve
    full = open_dataset("builtin:digits-detect/val", "digits-canvas")
    np.testing.assert_allclose(small.annotation(3).boxes, full.annotation(3).boxes / 2)
    assert small.get(3)[0].shape == (3, 32, 32)
    assert fingerprint("builtin:digits-seg/val")["version"]
    tensors = calibration_tensors("builtin:digits-detect/train", "digits-canvas", 8, cache=tmp_path, progress=False)
    assert tensors.shape == (8, 1, 64, 64)


def test_a_phone_photo_is_read_upright_as_its_exif_orientation_says(tmp_path: Path, tall) -> None:
    """A portrait photo stored sideways with EXIF orientation 6: its pixels, its size and the boxes
    drawn on it are the upright image's, as Ultralytics and OpenCV read it (they were sideways)."""
    upright = np.random.default_rng(0).integers(0, 255, (100, 50, 3), dtype=np.uint8)  # 50 wide, 100 high
    (tmp_path / "images").mkdir()
    Image.fromarray(upright).save(tmp_path / "images" / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view": the stored pixels are the upright ones turned left
    Image.fromarray(np.rot90(upright)).save(tmp_path / "images" / "phone.jpg", exif=exif, quality=100,
                                             subsampling=0)
    coco = {"images": [{"id": 1, "file_name": "phone.jpg"}, {"id": 2, "file_name": "upright.png"}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 60, 30, 30]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 60, 30, 30]}]}
    path = text(tmp_path / "instances.json", json.dumps(coco))
    data = open_dataset(path, tall)
    phone, straight = data.get(0)[0], data.get(1)[0]
    # a box reaching y=90 fits the 50x100 upright photo (sideways, 100x50, it "reached outside")
    assert data.annotation(0).boxes.tolist() == data.annotation(1).boxes.tolist()
    assert phone.shape == straight.shape == (3, 100, 50)
    assert np.abs(phone - straight).mean() < 0.02  # the same picture, up to JPEG rounding
    assert np.abs(phone - straight[:, :, ::-1]).mean() > 0.1  # and not its mirror image
