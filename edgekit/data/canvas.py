"""``builtin:digits-detect`` and ``builtin:digits-seg``: real handwriting, placed on canvases.

The UCI digits (the scans behind ``builtin:digits``) are upscaled to 14-28 px and placed, 1-3 per
image and never overlapping, on 64x64 grey canvases with mild noise. Detection boxes are the tight
box of each digit's ink; segmentation masks give ink pixels class ``digit + 1`` (0 = background).
Each canvas is made from its own seed (split, index) when read, so opening a set is instant and an
image is the same bytes on every machine. Train canvases use only ``builtin:digits/train`` scans,
val and test theirs: no handwriting is shared between splits.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Sequence

import numpy as np

from edgekit.data.datasets import DIGITS_SPLITS, Dataset, _digits_split, digits_file
from edgekit.data.recipes import Recipe
from edgekit.errors import EdgekitError

CANVAS = 64
SIZES = {"train": 1500, "val": 300, "test": 300}
INK = 0.25  # of a digit's peak: the pixels that are the digit (its box, its mask)
KINDS = ("digits-detect", "digits-seg")


@dataclasses.dataclass(frozen=True)
class Boxes:
    """One image's objects in model-input pixels: ``boxes`` [K,4] x1,y1,x2,y2, ``classes`` [K] 0-based."""

    boxes: np.ndarray
    classes: np.ndarray


class DigitCanvases(Dataset):
    """The synthetic sets; ``get`` returns (image, sample index) and ``annotation`` its ground truth."""

    def __init__(self, kind: str, split: str | None, recipe: Recipe) -> None:
        super().__init__(f"builtin:{kind}{'/' + split if split else ''}", recipe)
        if split is not None and split not in DIGITS_SPLITS:
            raise EdgekitError(f"builtin:{kind}/{split}: unknown split (use {', '.join(DIGITS_SPLITS)})")
        check_stretch(recipe, self.source)
        self.task = "detection" if kind == "digits-detect" else "segmentation"
        self.classes = [str(d) for d in range(10)] if self.task == "detection" else ["background"] + [
            str(d) for d in range(10)]
        with np.load(digits_file()) as arrays:
            images, labels = arrays["images"], arrays["labels"].astype(np.int64)
        self.splits = [split] if split else list(DIGITS_SPLITS)
        self.pools = {s: (images[_digits_split(labels, s)], labels[_digits_split(labels, s)]) for s in self.splits}
        self.offsets = np.cumsum([0] + [SIZES[s] for s in self.splits])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, index: int) -> tuple[str, int]:
        part = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return self.splits[part], index - int(self.offsets[part])

    def draw(self, index: int) -> tuple[np.ndarray, Boxes, np.ndarray]:
        """The canvas (uint8 HxW), its boxes and its mask, at canvas resolution."""
        from PIL import Image

        split, local = self._locate(index)
        scans, labels = self.pools[split]
        rng = np.random.default_rng([list(DIGITS_SPLITS).index(split), local, 20261127])
        canvas = rng.normal(18, 6, (CANVAS, CANVAS)).clip(0, 255)
        mask = np.zeros((CANVAS, CANVAS), np.int64)
        boxes, classes, taken = [], [], []
        for _ in range(int(rng.integers(1, 4))):
            pick = int(rng.integers(len(scans)))
            side = int(rng.integers(14, 29))
            for _attempt in range(20):
                x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, 2))
                if all(x + side <= a or a + s <= x or y + side <= b or b + s <= y for a, b, s in taken):
                    break
            else:
                continue
            taken.append((x, y, side))
            digit = np.asarray(Image.fromarray(scans[pick]).resize((side, side), Image.BILINEAR), np.float64)
            ink = digit > INK * digit.max()
            region = canvas[y:y + side, x:x + side]
            canvas[y:y + side, x:x + side] = np.maximum(region, digit * rng.uniform(0.75, 1.0))
            mask[y:y + side, x:x + side][ink] = int(labels[pick]) + 1
            rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
            boxes.append([x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1])
            classes.append(int(labels[pick]))
        found = Boxes(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64))
        return canvas.round().astype(np.uint8), found, mask

    def get(self, index: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        return self.recipe.apply(Image.fromarray(self.draw(index)[0], mode="L")), index

    def annotation(self, index: int) -> Boxes | np.ndarray:
        """Detection: Boxes scaled to the recipe's size; segmentation: the mask resized (nearest) to it."""
        _, boxes, mask = self.draw(index)
        height, width = self.recipe.size
        if self.task == "detection":
            scale = np.asarray([width, height, width, height], np.float32) / CANVAS
            return Boxes(boxes.boxes * scale, boxes.classes)
        if (height, width) == (CANVAS, CANVAS):
            return mask
        rows = (np.arange(height) * CANVAS // height)[:, None]
        cols = (np.arange(width) * CANVAS // width)[None, :]
        return mask[rows, cols]

    def identity(self, indices: Sequence[int]) -> str:
        digest = hashlib.sha256(f"{self.source}:{CANVAS}:{INK}:v1".encode())
        digest.update(np.asarray(indices, np.int64).tobytes())
        return digest.hexdigest()


def check_stretch(recipe: Recipe, source: str) -> None:
    """Boxes and masks follow the image only through a plain resize to the recipe's size."""
    if recipe.resize or recipe.center_crop:
        raise EdgekitError(f"{source}: recipe '{recipe.name}' crops (resize/center_crop); detection and "
                           "segmentation data need 'resize: null, center_crop: false' so boxes and masks follow the image")
