"""Data sources for calibration, training and evaluation, read lazily (never a whole folder in memory).

Sources:
  ``path/to/folder``       images, recursively (jpg/jpeg/png/bmp/webp); class sub-folders give labels
  ``file.npy`` / ``.npz``  float N,C,H,W tensors (already preprocessed) or uint8 N,H,W,C images;
                           an .npz may carry labels as ``y`` or ``labels``
  ``builtin:digits``       the UCI handwritten digits, shipped (real data, no download), with
                           deterministic stratified splits ``/train`` (70%), ``/val`` (15%), ``/test`` (15%)

Annotated sources (detection and segmentation: :class:`edgekit.data.annotated.AnnotatedDataset`,
``get`` yields the sample index as the label, ``annotation(i)`` the boxes or mask; the recipe must
stretch, ``resize: null, center_crop: false``):
  ``data.yaml[#split]``    an Ultralytics (YOLO) data YAML, its ``val`` split unless ``#train``/``#test``
  ``folder[#split]``       with ``images/`` + ``labels/``: YOLO label files (``images/<split>`` with ``#split``)
  ``instances.json``       a COCO JSON (images next to it or in its ``images/`` folder)
  ``folder[#split]``       with ``images/`` + ``masks/``, or VOC's ``JPEGImages/`` + ``SegmentationClass/``:
                           segmentation masks (palette or grayscale PNGs, 255 = ignore)
  ``builtin:digits-detect``, ``builtin:digits-seg``  64x64 canvases of 1-3 shipped digits, ``/train``
                           (1,500), ``/val`` (300), ``/test`` (300); recipe ``digits-canvas``
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from edgekit.data.base import (  # noqa: F401 - re-exported: the names every caller imports from here
    DIGITS_SPLITS, IMAGE_SUFFIXES, BadSample, Dataset, _digits_split, digits_file, images_under, read_image,
)
from edgekit.data.recipes import Recipe, load_recipe
from edgekit.errors import EdgekitError, first_line


class ImageFolder(Dataset):
    def __init__(self, root: Path, recipe: Recipe) -> None:
        super().__init__(str(root), recipe)
        if not root.exists():
            raise EdgekitError(f"{root}: data folder not found")
        if not root.is_dir():
            raise EdgekitError(f"{root}: not a folder, .npy/.npz file or builtin:NAME")
        self.files = images_under(root)
        if not self.files:
            raise EdgekitError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)}, recursively)")
        relative = [f.relative_to(root) for f in self.files]
        if all(len(r.parts) >= 2 for r in relative):
            self.classes = sorted({r.parts[0] for r in relative})
            index = {name: i for i, name in enumerate(self.classes)}
            self.labels = [index[r.parts[0]] for r in relative]

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int) -> tuple[np.ndarray, int]:
        return self.recipe.apply(read_image(self.files[index], self.recipe)), self.label(index)

    def identity(self, indices: Sequence[int]) -> str:
        digest = hashlib.sha256(self.source.encode())
        for i in indices:
            digest.update(str(self.files[i].relative_to(self.source)).encode())
            digest.update(hashlib.sha256(self.files[i].read_bytes()).digest())
        return digest.hexdigest()


class ArrayFile(Dataset):
    def __init__(self, path: Path, recipe: Recipe) -> None:
        super().__init__(str(path), recipe)
        if not path.is_file():
            raise EdgekitError(f"{path}: tensor file not found")
        try:
            loaded = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise EdgekitError(f"{path}: not a readable .npy/.npz file ({first_line(exc)})") from exc
        labels = None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            keys = list(loaded.keys())
            data_key = next((k for k in ("x", "images", "data", "arr_0") if k in keys), None)
            if data_key is None:
                raise EdgekitError(f"{path}: no array named x, images, data or arr_0 (found {', '.join(keys)})")
            label_key = next((k for k in ("y", "labels") if k in keys), None)
            labels = _labels(path, label_key, _member(path, loaded, label_key)) if label_key else None
            loaded = _member(path, loaded, data_key)
        self.array = np.asarray(loaded)
        if self.array.ndim != 4 or len(self.array) == 0:
            raise EdgekitError(f"{path}: expected a non-empty N,C,H,W or N,H,W,C array, got shape {list(self.array.shape)}")
        if self.array.dtype.kind not in "fiu":
            raise EdgekitError(f"{path}: the tensors are {self.array.dtype}, expected a float or integer array")
        if self.array.dtype.kind == "f" and not np.isfinite(self.array).all():
            raise EdgekitError(f"{path}: the tensors contain NaN or infinite values")
        if labels is not None and len(labels) != len(self.array):
            raise EdgekitError(f"{path}: '{label_key}' has {len(labels)} labels for {len(self.array)} samples")
        self.labels = labels
        self.is_images = self.array.dtype == np.uint8 and self.array.shape[-1] in (1, 3)
        if not self.is_images:
            expected = recipe.input_shape()[1:]
            if tuple(self.array.shape[1:]) != tuple(expected):
                raise EdgekitError(
                    f"{path}: tensors have shape {list(self.array.shape[1:])} per item, "
                    f"the recipe '{recipe.name}' makes {list(expected)}"
                )

    def __len__(self) -> int:
        return len(self.array)

    def get(self, index: int) -> tuple[np.ndarray, int]:
        item = self.array[index]
        if self.is_images:
            from PIL import Image

            image = Image.fromarray(item[:, :, 0] if item.shape[-1] == 1 else item)
            return self.recipe.apply(image), self.label(index)
        return item.astype(np.float32), self.label(index)

    def identity(self, indices: Sequence[int]) -> str:
        digest = hashlib.sha256(Path(self.source).read_bytes())
        digest.update(np.asarray(indices, np.int64).tobytes())
        return digest.hexdigest()


def _member(path: Path, archive: Any, key: str) -> np.ndarray:
    """One array of an .npz: members are read lazily, so a bad one fails here, not mid-evaluation."""
    try:
        return np.asarray(archive[key])
    except Exception as exc:
        raise EdgekitError(f"{path}: array '{key}' is not readable ({first_line(exc)})") from exc


def _labels(path: Path, key: str, values: np.ndarray) -> list[int]:
    """Class indices: one non-negative integer per sample (a float 1.2 or a -1 is a broken file, not a class)."""
    if values.ndim != 1 or values.dtype.kind not in "fiub":
        raise EdgekitError(f"{path}: '{key}' must be a 1-D array of class indices, got {values.dtype} "
                           f"shape {list(values.shape)}")
    if values.dtype.kind == "f" and not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise EdgekitError(f"{path}: '{key}' holds non-integer class indices")
    if values.size and values.min() < 0:
        raise EdgekitError(f"{path}: '{key}' holds a negative class index ({values.min():g})")
    return values.astype(np.int64).tolist()


class Digits(Dataset):
    """The UCI handwritten digits (1,797 8x8 scans, as scikit-learn ships them, values 0-16 scaled to
    8-bit grayscale), shipped as ``calibration/digits.npz`` (46 kB) so the light install needs no
    scikit-learn/SciPy (190 MB) for the demo's data."""

    def __init__(self, split: str | None, recipe: Recipe) -> None:
        super().__init__(f"builtin:digits{'/' + split if split else ''}", recipe)
        with np.load(digits_file()) as arrays:
            images, targets = arrays["images"], arrays["labels"].astype(int)
        order = _digits_split(targets, split)
        self.images = images[order]
        self.labels = targets[order].tolist()
        self.classes = [str(d) for d in range(10)]

    def __len__(self) -> int:
        return len(self.images)

    def get(self, index: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        return self.recipe.apply(Image.fromarray(self.images[index], mode="L")), self.labels[index]

    def identity(self, indices: Sequence[int]) -> str:
        digest = hashlib.sha256(self.source.encode())
        digest.update(np.asarray(indices, np.int64).tobytes())
        return digest.hexdigest()


def open_dataset(source: str | Path, recipe: Recipe | str) -> Dataset:
    """Resolve a data source (see the module docstring) with the recipe that prepares it."""
    from edgekit.data.annotated import SegmentationFolder
    from edgekit.data.canvas import CANVAS_SETS, DigitsCanvas
    from edgekit.data.yolo_coco import CocoDataset, open_yolo_folder, open_yolo_yaml

    recipe = load_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    text = str(source)
    if text.startswith("builtin:"):
        name, _, split = text[len("builtin:"):].partition("/")
        if name in CANVAS_SETS:
            return DigitsCanvas(name, split or None, recipe)
        if name != "digits":
            raise EdgekitError(f"{text}: unknown built-in data set (available: builtin:digits, "
                               f"{', '.join('builtin:' + n for n in CANVAS_SETS)})")
        return Digits(split or None, recipe)
    path, split = _split_suffix(text)
    kind = annotated_kind(path)
    if kind == "yolo-yaml":
        return open_yolo_yaml(path, split, recipe)
    if kind == "coco":
        return CocoDataset(path, recipe)
    if kind == "yolo-folder":
        return open_yolo_folder(path, split, recipe)
    if kind == "segmentation":
        return SegmentationFolder(path, split, recipe)
    if path.suffix.lower() in (".npy", ".npz"):
        return ArrayFile(path, recipe)
    return ImageFolder(path, recipe)


def annotated_kind(path: Path) -> str | None:
    """Which annotated layout ``path`` is (``yolo-yaml``, ``coco``, ``yolo-folder``, ``segmentation``), or None."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return "yolo-yaml"
    if path.suffix.lower() == ".json":
        return "coco"
    if (path / "images").is_dir() and (path / "labels").is_dir():
        return "yolo-folder"
    if ((path / "images").is_dir() and (path / "masks").is_dir()) or \
            ((path / "JPEGImages").is_dir() and (path / "SegmentationClass").is_dir()):
        return "segmentation"
    return None


def annotated_task(source: str | Path) -> str | None:
    """``detection`` or ``segmentation`` for an annotated source (without opening it), else None:
    how a task tells boxes and masks from class labels before reading anything (an annotated set's
    ``get`` labels are sample indices, which a classifier must not score against)."""
    from edgekit.data.canvas import CANVAS_SETS

    text = str(source)
    if text.startswith("builtin:"):
        return CANVAS_SETS.get(text[len("builtin:"):].partition("/")[0])
    kind = annotated_kind(_split_suffix(text)[0])
    return None if kind is None else "segmentation" if kind == "segmentation" else "detection"


def _split_suffix(text: str) -> tuple[Path, str | None]:
    """``data.yaml#train`` -> (data.yaml, "train"); a ``#`` that is part of a real path stays."""
    base, sep, split = text.rpartition("#")
    if sep and split and "/" not in split and not Path(text).exists() and annotated_kind(Path(base)) is not None:
        return Path(base), split
    return Path(text), None


def natural_recipe(source: str | Path) -> str | None:
    """The shipped recipe a built-in source is made for (``digits`` for ``builtin:digits``,
    ``digits-canvas`` for the canvas sets); None for a user's data, whose recipe only the user knows."""
    from edgekit.data.canvas import CANVAS_RECIPE, CANVAS_SETS

    name = str(source).removeprefix("builtin:").partition("/")[0] if str(source).startswith("builtin:") else None
    if name == "digits":
        return "digits"
    return CANVAS_RECIPE if name in CANVAS_SETS else None


def sample_indices(dataset: Dataset, n: int | None, seed: int = 0, stratified: bool = True) -> list[int]:
    """``n`` seeded indices; proportional per class when labels exist, so rare classes are calibrated too."""
    total = len(dataset)
    if n is None or n >= total:
        return list(range(total))
    if n <= 0:
        raise EdgekitError(f"--num-samples: must be positive, got {n}")
    rng = np.random.default_rng(seed)
    if not stratified or dataset.labels is None:
        return sorted(rng.choice(total, size=n, replace=False).tolist())
    labels = np.asarray(dataset.labels)
    classes = np.unique(labels)
    counts = {c: int(np.sum(labels == c)) for c in classes}
    quota = {c: int(np.floor(n * counts[c] / total)) for c in classes}
    leftover = n - sum(quota.values())
    for c in sorted(classes, key=lambda c: -(n * counts[c] / total - quota[c]))[:leftover]:
        quota[c] += 1
    chosen: list[int] = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        chosen.extend(rng.choice(members, size=min(quota[c], len(members)), replace=False).tolist())
    return sorted(chosen)


def iter_batches(dataset: Dataset, indices: Sequence[int], batch_size: int, skip_bad: bool = False,
                 skipped: list[str] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Prepared batches (NCHW float32, int64 labels); with ``skip_bad`` bad samples are listed in ``skipped``."""
    xs: list[np.ndarray] = []
    ys: list[int] = []
    for index in indices:
        try:
            x, y = dataset.get(index)
        except BadSample as exc:
            if not skip_bad:
                raise
            if skipped is not None:
                skipped.append(str(exc))
            continue
        xs.append(x)
        ys.append(y)
        if len(xs) == batch_size:
            yield np.stack(xs), np.asarray(ys, np.int64)
            xs, ys = [], []
    if xs:
        yield np.stack(xs), np.asarray(ys, np.int64)


def load_all(dataset: Dataset, indices: Sequence[int] | None = None, skip_bad: bool = False,
             progress: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Prepare the selected samples into arrays (for sets that fit in memory: calibration, evaluation)."""
    from edgekit.log import progress as progress_bar

    indices = list(range(len(dataset))) if indices is None else list(indices)
    skipped: list[str] = []
    xs, ys = [], []
    with progress_bar(total=len(indices), desc=progress, unit="img", disable=None if progress is not None else True) as bar:
        for x, y in iter_batches(dataset, indices, 64, skip_bad, skipped):
            xs.append(x)
            ys.append(y)
            bar.update(len(x))
    if not xs:
        raise EdgekitError(f"{dataset.source}: no usable samples ({len(skipped)} skipped as bad)")
    return np.concatenate(xs), np.concatenate(ys), skipped

