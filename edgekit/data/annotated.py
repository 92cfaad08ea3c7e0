"""Data with annotations (boxes, masks) for detection and segmentation, and segmentation folders.

An :class:`AnnotatedDataset` yields ``(image tensor, sample index)`` from ``get`` like any dataset,
so calibration and training read it unchanged; a task looks the ground truth up by that index with
:meth:`AnnotatedDataset.annotation`, already in *model-input* pixels. That is only well defined for a
recipe that stretches the whole image to ``size``: a resize + centre crop would cut objects in half,
so such a recipe is refused at open.

Segmentation folders (``images/`` + ``masks/``, or VOC's ``JPEGImages/`` + ``SegmentationClass/``)
are here; YOLO and COCO detection sets are in :mod:`edgekit.data.yolo_coco`, the built-in synthetic
sets in :mod:`edgekit.data.canvas`.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgekit.data.base import (IMAGE_SUFFIXES, BadSample, Dataset, decode_errors, images_under, read_image,
                               unreadable, upright_size)
from edgekit.data.recipes import Recipe
from edgekit.errors import EdgekitError, first_line

IGNORE = 255  # a mask value that is no class: borders and "don't care" regions (VOC's convention)


@dataclasses.dataclass(frozen=True)
class Boxes:
    """One image's ground-truth objects in model-input pixels (after the recipe's stretch to
    ``recipe.size``): ``boxes`` [K,4] float32 x1,y1,x2,y2 (pixel edges: a box over columns 3..5 is
    x1=3, x2=6), ``classes`` [K] int64 0-based class indices."""

    boxes: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.classes)


def require_stretch(recipe: Recipe, source: str) -> None:
    """Boxes and masks map to model pixels by a plain scale only when the recipe stretches the image."""
    if recipe.resize is not None or recipe.center_crop:
        raise EdgekitError(f"{source}: recipe '{recipe.name}' resizes and/or centre-crops; detection and segmentation "
                           "data needs a recipe that stretches the whole image (resize: null, center_crop: false)")


def scale_boxes(xyxy: np.ndarray, classes: np.ndarray, width: float, height: float, recipe: Recipe) -> Boxes:
    """Boxes in source pixels of a ``width`` x ``height`` image -> :class:`Boxes` at ``recipe.size``."""
    size_h, size_w = recipe.size
    factor = np.asarray([size_w / width, size_h / height] * 2, np.float64)
    scaled = np.asarray(xyxy, np.float64).reshape(-1, 4) * factor
    scaled = np.clip(scaled, 0.0, [size_w, size_h, size_w, size_h])
    return Boxes(scaled.astype(np.float32), np.asarray(classes, np.int64).reshape(-1))


def resize_mask(mask: np.ndarray, recipe: Recipe) -> np.ndarray:
    """A class-index mask at ``recipe.size``, nearest neighbour (interpolating class ids makes new ones)."""
    from PIL import Image

    size_h, size_w = recipe.size
    if mask.shape != (size_h, size_w):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8), "L").resize((size_w, size_h), Image.NEAREST))
    return mask.astype(np.int64)


class AnnotatedDataset(Dataset):
    """A detection or segmentation source: ``get(i)`` is ``(recipe.apply(image), i)`` (the label is the
    sample index, so a task finds the ground truth of a batch's items); ``annotation(i)`` is the
    :class:`Boxes` (detection) or the [H,W] int64 mask at ``recipe.size`` (segmentation, 255 = ignore)."""

    task: str = ""
    classes: list[str]
    labels = None  # no single class per image: sample_indices draws uniformly

    def __init__(self, source: str, recipe: Recipe) -> None:
        super().__init__(source, recipe)
        require_stretch(recipe, source)

    def image(self, index: int) -> Any:  # pragma: no cover - abstract
        """The source image (PIL), before the recipe."""
        raise NotImplementedError

    def get(self, index: int) -> tuple[np.ndarray, int]:
        return self.recipe.apply(self.image(index)), int(index)

    def annotation(self, index: int) -> Boxes | np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


class FileAnnotated(AnnotatedDataset):
    """Images on disk (``files``) with annotation files: the identity hashes both, so an edited label
    invalidates cached tensors and results just like an edited image."""

    files: list[Path]
    shared: tuple[Path, ...] = ()  # files every sample depends on (a COCO JSON, classes.txt)

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> Any:
        return read_image(self.files[index], self.recipe)

    def annotation_files(self, index: int) -> list[Path]:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity(self, indices: Sequence[int]) -> str:
        digest = hashlib.sha256(f"{self.task}\0{self.source}".encode())
        for path in self.shared:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        for i in indices:
            for path in (self.files[i], *self.annotation_files(i)):
                digest.update(str(path).encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"absent")
        return digest.hexdigest()


def read_names(path: Path) -> list[str] | None:
    """Class names from ``classes.txt`` (one per line, blank lines ignored), or None without the file."""
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"{path}: not readable UTF-8 text ({first_line(exc)})") from exc
    if not names:
        raise EdgekitError(f"{path}: no class names (one per line)")
    return names


class SegmentationFolder(FileAnnotated):
    """``images/`` + ``masks/`` (mask = the image's relative path with ``.png``; every image needs one),
    or VOC's ``JPEGImages/`` + ``SegmentationClass/`` (the masks pick the images: VOC has more images
    than masks; ``#train``/``#val`` reads ``ImageSets/Segmentation/<split>.txt``). With ``#split``,
    the first layout reads ``images/<split>`` and ``masks/<split>``.

    A mask is a palette PNG (the palette index is the class) or a grayscale one (the value is the
    class); 255 is ignore. Names come from ``classes.txt`` in the folder; without it they are
    ``"0".."max"`` over every mask, found on first use of ``classes`` (a pass over the masks that a
    caller only reading images never pays)."""

    task = "segmentation"

    def __init__(self, root: Path, split: str | None, recipe: Recipe) -> None:
        super().__init__(f"{root}#{split}" if split else str(root), recipe)
        self.names = read_names(root / "classes.txt")
        self.shared = (root / "classes.txt",) if self.names else ()
        self._classes: list[str] | None = self.names
        if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
            self.files, self.masks = _voc_pairs(root, split)
        else:
            image_root, mask_root = root / "images", root / "masks"
            if split:
                image_root, mask_root = image_root / split, mask_root / split
            if not image_root.is_dir():
                raise EdgekitError(f"{image_root}: image folder not found")
            self.files = images_under(image_root)
            self.masks = [mask_root / f.relative_to(image_root).with_suffix(".png") for f in self.files]
            missing = next((m for m, f in zip(self.masks, self.files) if not m.is_file()), None)
            if missing is not None:
                image = self.files[self.masks.index(missing)]
                raise EdgekitError(f"{missing}: mask missing for image {image}")
        if not self.files:
            raise EdgekitError(f"{self.source}: no images found")

    @property  # type: ignore[override]
    def classes(self) -> list[str]:
        if self._classes is None:
            top = max((int(v) for m in self.masks for v in np.unique(self._mask_values(m)) if v != IGNORE), default=0)
            self._classes = [str(i) for i in range(top + 1)]
        return self._classes

    def annotation_files(self, index: int) -> list[Path]:
        return [self.masks[index]]

    def _mask_values(self, path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as mask:
                if mask.mode not in ("P", "L"):
                    raise BadSample(f"{path}: mask mode {mask.mode}; a class mask is a palette (P) or grayscale (L) PNG")
                return np.asarray(mask)
        except decode_errors() as exc:
            raise unreadable(path, exc, "mask") from exc

    def annotation(self, index: int) -> np.ndarray:
        from PIL import Image

        path, image_path = self.masks[index], self.files[index]
        mask = self._mask_values(path)
        try:
            with Image.open(image_path) as image:
                width, height = upright_size(image)
        except decode_errors() as exc:
            raise unreadable(image_path, exc) from exc
        if mask.shape != (height, width):
            raise BadSample(f"{path}: mask {mask.shape[1]}x{mask.shape[0]}, image {width}x{height}")
        if self.names is not None:
            classes = mask[mask != IGNORE]
            if classes.size and int(classes.max()) >= len(self.names):
                raise BadSample(f"{path}: class id {int(classes.max())}, the data has {len(self.names)} classes "
                                f"(0-{len(self.names) - 1}, 255 = ignore)")
        return resize_mask(mask, self.recipe)


def _voc_pairs(root: Path, split: str | None) -> tuple[list[Path], list[Path]]:
    """(images, masks) of a VOC folder: every listed (or every present) mask with its JPEG image."""
    mask_root, image_root = root / "SegmentationClass", root / "JPEGImages"
    if split:
        listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise EdgekitError(f"{listing}: split list not found (VOC lists a split's images there)")
        stems = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
        masks = [mask_root / f"{stem}.png" for stem in stems]
        for number, mask in enumerate(masks, 1):
            if not mask.is_file():
                raise EdgekitError(f"{listing}:{number}: mask {mask} not found")
    else:
        masks = sorted(mask_root.glob("*.png"))
    images = []
    for mask in masks:
        candidates = (image_root / f"{mask.stem}{suffix}" for suffix in IMAGE_SUFFIXES)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise EdgekitError(f"{mask}: no image {mask.stem}.jpg (or another image suffix) in {image_root}")
        images.append(found)
    return images, masks
