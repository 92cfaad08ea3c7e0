"""Detection sets in the two formats people have: YOLO (Ultralytics) and COCO JSON.

Annotations are parsed and checked when the set is opened (label files and JSONs are small), so a
typo in line 3 of one label file is one line naming that file and line, before any model runs, not
a wrong mAP hours later.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.annotated import Boxes, FileAnnotated, read_names, scale_boxes
from edgekit.data.base import BadSample, decode_errors, images_under, unreadable, upright_size
from edgekit.data.recipes import Recipe
from edgekit.errors import EdgekitError, first_line
from edgekit.yamlfile import read_yaml_mapping

TOLERANCE = 1e-3  # normalised coordinates this far past the edge are rounding, not a wrong box
YOLO_SPLITS = ("train", "val", "test")


class YoloDataset(FileAnnotated):
    """Images with Ultralytics label files (``class cx cy w h`` per line, normalised 0-1; an image
    without a label file has no objects). Boxes need no image size: they are fractions of it."""

    task = "detection"

    def __init__(self, source: str, files: list[Path], names: list[str] | None, recipe: Recipe,
                 shared: tuple[Path, ...] = ()) -> None:
        super().__init__(source, recipe)
        if not files:
            raise EdgekitError(f"{source}: no images found")
        self.files, self.shared = files, shared
        self.label_files = [label_path(f) for f in files]
        self.objects = [_read_labels(p, names) for p in self.label_files]
        if names is None:
            top = max((int(o[:, 0].max()) for o in self.objects if len(o)), default=-1)
            names = [str(i) for i in range(top + 1)]
        self.classes = names

    def annotation_files(self, index: int) -> list[Path]:
        return [self.label_files[index]]

    def annotation(self, index: int) -> Boxes:
        rows = self.objects[index]
        cx, cy, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        return scale_boxes(xyxy, rows[:, 0], 1.0, 1.0, self.recipe)


def label_path(image: Path) -> Path:
    """Ultralytics' rule: the last ``/images/`` component becomes ``/labels/``, the suffix ``.txt``."""
    parts = list(image.parts)
    if "images" in parts[:-1]:
        at = len(parts) - 2 - parts[:-1][::-1].index("images")
        parts[at] = "labels"
    return Path(*parts).with_suffix(".txt")


def _read_labels(path: Path, names: list[str] | None) -> np.ndarray:
    """[K,5] float64 rows (class, cx, cy, w, h), checked; empty without a label file."""
    rows: list[list[float]] = []
    if not path.is_file():
        return np.zeros((0, 5))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"{path}: not readable UTF-8 text ({first_line(exc)})") from exc
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(fields) != 5 or len(values) != 5 or not all(math.isfinite(v) for v in values):
            raise EdgekitError(f"{where}: expected 'class cx cy w h', got {line.strip()[:80]!r}")
        cls, cx, cy, w, h = values
        if cls != int(cls) or cls < 0:
            raise EdgekitError(f"{where}: class id {fields[0]} is not a non-negative integer")
        if names is not None and cls >= len(names):
            raise EdgekitError(f"{where}: class id {int(cls)}, the data has {len(names)} classes (0-{len(names) - 1})")
        if w <= 0 or h <= 0:
            raise EdgekitError(f"{where}: box width {fields[3]} height {fields[4]}; both must be positive")
        low, high = min(cx - w / 2, cy - h / 2), max(cx + w / 2, cy + h / 2)
        if low < -TOLERANCE or high > 1 + TOLERANCE:
            raise EdgekitError(f"{where}: box cx {fields[1]} cy {fields[2]} w {fields[3]} h {fields[4]} reaches "
                               f"outside the image (normalised coordinates are 0-1)")
        rows.append(values)
    return np.asarray(rows, np.float64).reshape(-1, 5)


def open_yolo_yaml(path: Path, split: str | None, recipe: Recipe) -> YoloDataset:
    """An Ultralytics data YAML: ``split`` (default ``val``) names image folders (or a list of
    them, or a .txt listing images) relative to ``path``, itself relative to the YAML's folder."""
    data = read_yaml_mapping(path, "data YAML")
    split = split or "val"
    source = f"{path}#{split}"
    if split not in YOLO_SPLITS:
        raise EdgekitError(f"{source}: unknown split (use {', '.join(YOLO_SPLITS)})")
    if not data.get(split):
        present = [s for s in YOLO_SPLITS if data.get(s)]
        raise EdgekitError(f"{path}: no '{split}' split (it has {', '.join(present) or 'none'})")
    names = _yaml_names(path, data)
    root = Path(str(data.get("path") or ""))
    root = root if root.is_absolute() else path.parent / root
    entries = data[split] if isinstance(data[split], list) else [data[split]]
    files: list[Path] = []
    for entry in entries:
        files.extend(_split_images(path, split, root / str(entry)))
    return YoloDataset(source, files, names, recipe, shared=(path,))


def _yaml_names(path: Path, data: dict[str, Any]) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        ids = sorted(names, key=lambda k: int(k) if str(k).isdigit() else -1)
        if [str(i) for i in ids] != [str(i) for i in range(len(ids))]:
            raise EdgekitError(f"{path}: key 'names': ids must be 0..{len(ids) - 1}, got {', '.join(map(str, ids))}")
        names = [names[i] for i in ids]
    if not isinstance(names, list) or not names:
        raise EdgekitError(f"{path}: key 'names': a list of class names, or a mapping id: name, is required")
    if "nc" in data and data["nc"] != len(names):
        raise EdgekitError(f"{path}: key 'nc' is {data['nc']} but 'names' has {len(names)} classes")
    return [str(n) for n in names]


def _split_images(path: Path, split: str, entry: Path) -> list[Path]:
    if entry.is_dir():
        return images_under(entry)
    if entry.suffix == ".txt" and entry.is_file():
        images = []
        for number, line in enumerate(entry.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                image = entry.parent / line.strip()
                if not image.is_file():
                    raise EdgekitError(f"{entry}:{number}: image {image} not found")
                images.append(image)
        return images
    raise EdgekitError(f"{path}: split '{split}': {entry} not found (an image folder or a .txt list of images)")


def open_yolo_folder(root: Path, split: str | None, recipe: Recipe) -> YoloDataset:
    """A folder with ``images/`` and ``labels/`` (``#split`` reads ``images/<split>``); names from its
    ``data.yaml`` or ``classes.txt``, else ``"0".."max"`` of the class ids used."""
    images = root / "images" / split if split else root / "images"
    if not images.is_dir():
        raise EdgekitError(f"{images}: image folder not found")
    names, shared = read_names(root / "classes.txt"), (root / "classes.txt",)
    if (root / "data.yaml").is_file():
        names = _yaml_names(root / "data.yaml", read_yaml_mapping(root / "data.yaml", "data YAML"))
        shared = (root / "data.yaml",)
    return YoloDataset(f"{root}#{split}" if split else str(root), images_under(images), names, recipe,
                       shared=shared if names else ())


class CocoDataset(FileAnnotated):
    """A COCO ``instances`` JSON: images found next to it or in its ``images/`` folder; category ids
    mapped to contiguous indices in sorted id order; crowd regions (``iscrowd: 1``) left out."""

    task = "detection"

    def __init__(self, path: Path, recipe: Recipe) -> None:
        super().__init__(str(path), recipe)
        data = _read_json(path)
        for key in ("images", "categories", "annotations"):
            entries = data.get(key) or []
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise EdgekitError(f"{path}: '{key}' must be a list of objects")
            if key != "annotations" and any("id" not in e for e in entries):
                raise EdgekitError(f"{path}: an entry of '{key}' has no 'id'")
        categories = data.get("categories") or []
        if not all(isinstance(c["id"], int) for c in categories):
            raise EdgekitError(f"{path}: category ids must be integers")
        categories = sorted(categories, key=lambda c: c["id"])
        if not categories:
            raise EdgekitError(f"{path}: no 'categories'")
        self.category_index = {c["id"]: i for i, c in enumerate(categories)}
        self.classes = [str(c.get("name", c["id"])) for c in categories]
        self.files, self.sizes, by_id = [], [], {}
        for entry in data.get("images") or []:
            by_id[entry.get("id")] = len(self.files)
            self.files.append(_find_image(path, entry))
            size = (entry.get("width"), entry.get("height"))  # absent or not a number: read from the image
            self.sizes.append(tuple(v if isinstance(v, (int, float)) and v > 0 else None for v in size))
        if not self.files:
            raise EdgekitError(f"{path}: no 'images'")
        rows: list[list[list[float]]] = [[] for _ in self.files]
        for ann in data.get("annotations") or []:
            if ann.get("iscrowd", 0):
                continue
            at = f"{path}: annotation {ann.get('id')}"
            if ann.get("image_id") not in by_id:
                raise EdgekitError(f"{at}: image_id {ann.get('image_id')} is not in 'images'")
            if ann.get("category_id") not in self.category_index:
                raise EdgekitError(f"{at}: category_id {ann.get('category_id')} is not in 'categories'")
            index = by_id[ann["image_id"]]
            rows[index].append([self.category_index[ann["category_id"]], *_bbox(at, ann.get("bbox"), self.sizes[index])])
        self.objects = [np.asarray(r, np.float64).reshape(-1, 5) for r in rows]
        self.shared = (path,)

    def annotation_files(self, index: int) -> list[Path]:
        return []

    def annotation(self, index: int) -> Boxes:
        width, height = self.sizes[index]
        rows = self.objects[index]
        if not width or not height:  # not in the JSON: the image's header says, and bounds are checked now
            width, height = _image_size(self.files[index])
            ends = rows[:, 1:3] + rows[:, 3:5]
            if len(rows) and (ends[:, 0].max() > width + 1 or ends[:, 1].max() > height + 1):
                raise BadSample(f"{self.source}: image {self.files[index].name}: a bbox reaches outside the "
                                f"{width}x{height} image")
        xyxy = np.concatenate([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]], axis=1)
        return scale_boxes(xyxy, rows[:, 0], width, height, self.recipe)


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return upright_size(image)
    except decode_errors() as exc:
        raise unreadable(path, exc) from exc


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise EdgekitError(f"{path}: annotation file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgekitError(f"{path}: not a readable COCO JSON ({first_line(exc)})") from exc
    if not isinstance(data, dict):
        raise EdgekitError(f"{path}: not a COCO JSON (expected an object with images, annotations, categories)")
    return data


def _find_image(path: Path, entry: dict[str, Any]) -> Path:
    name = str(entry.get("file_name", ""))
    for folder in (path.parent, path.parent / "images"):
        if name and (folder / name).is_file():
            return folder / name
    raise EdgekitError(f"{path}: image {entry.get('id')} {name!r} not found (looked in {path.parent} and "
                       f"{path.parent / 'images'})")


def _bbox(at: str, bbox: Any, size: tuple[Any, Any]) -> list[float]:
    """[x, y, w, h] in pixels, inside the image (1 px of slack: COCO's own boxes overshoot by rounding)."""
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise EdgekitError(f"{at}: bbox {bbox!r} is not [x, y, width, height]") from None
    width, height = size
    outside = not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0 or x < -1 or y < -1
    if width and height and (x + w > width + 1 or y + h > height + 1):
        outside = True
    if outside:
        image = f"the {width}x{height} image" if width and height else "the image"
        raise EdgekitError(f"{at}: bbox {[x, y, w, h]} is empty or outside {image}")
    return [x, y, w, h]
