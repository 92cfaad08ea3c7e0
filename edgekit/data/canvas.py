"""``builtin:digits-detect`` and ``builtin:digits-seg``: small detection and segmentation sets made
from the shipped handwritten digits, so the detection and segmentation paths have real data to run
on with no download.

Each sample is a 64x64 grayscale canvas with 1-3 digit scans, each upscaled (bilinear) to a random
side of 14-28 px and pasted where it overlaps no other paste square, on a dark background with mild
noise. A canvas is rendered on demand from a seed derived from (split, index), so opening a set is
instant and the same index always gives the same pixels, boxes and masks. The detection and the
segmentation set share their canvases. Canvases of a split use only that split's digits
(:func:`edgekit.data.base._digits_split`), so a model trained on ``/train`` never saw a test digit.

Detection: class = the digit (10 classes "0".."9"), box = the tight box of its ink (upscaled pixels
above 25% of the digit's maximum), not the paste square. Segmentation: 0 = background, digit d is
class d+1 on its ink pixels (11 classes). The natural recipe is ``digits-canvas`` (1x64x64, /255).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from typing import Any, Sequence

import numpy as np

from edgekit.data.annotated import AnnotatedDataset, Boxes, resize_mask, scale_boxes
from edgekit.data.base import DIGITS_SPLITS, _digits_split, digits_file
from edgekit.data.recipes import Recipe
from edgekit.errors import EdgekitError

CANVAS_SIDE = 64
CANVAS_COUNTS = {"train": 1500, "val": 300, "test": 300}
CANVAS_SETS = {"digits-detect": "detection", "digits-seg": "segmentation"}
CANVAS_RECIPE = "digits-canvas"
SIDES = (14, 28)  # a pasted digit's side in pixels, inclusive
INK = 0.25  # fraction of a digit's maximum above which an upscaled pixel is ink
PLACEMENT_TRIES = 100  # a digit that finds no free spot in this many draws is left out (the first always fits)
VERSION = "1"  # in the identity: bump when rendering changes, so cached tensors are not reused


@dataclasses.dataclass(frozen=True)
class Canvas:
    """One rendered sample at 64x64: uint8 ``image``, ink ``boxes`` [K,4] (pixel edges), ``digits`` [K],
    the segmentation ``mask`` (0 background, d+1 for digit d), and ``sources`` [K]: which scans of
    ``digits.npz`` were pasted (how a test proves the splits never share a digit)."""

    image: np.ndarray
    boxes: np.ndarray
    digits: np.ndarray
    mask: np.ndarray
    sources: np.ndarray


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    with np.load(digits_file()) as arrays:
        return arrays["images"], arrays["labels"].astype(np.int64)


@functools.lru_cache(maxsize=None)
def _pool(split: str) -> np.ndarray:
    """The indices of the digits a split's canvases may use: the same split as ``builtin:digits``."""
    return _digits_split(_digits()[1], split)


def render(split: str, index: int) -> Canvas:
    """The ``index``-th canvas of ``split``, from a seed of its own (deterministic, order-free)."""
    from PIL import Image

    images, targets = _digits()
    pool = _pool(split)
    rng = np.random.default_rng([20240, list(DIGITS_SPLITS).index(split), index])
    canvas = np.clip(16.0 + rng.normal(0.0, 4.0, (CANVAS_SIDE, CANVAS_SIDE)), 0, 255)
    mask = np.zeros((CANVAS_SIDE, CANVAS_SIDE), np.uint8)
    squares: list[tuple[int, int, int]] = []
    boxes, digits, sources = [], [], []
    for _ in range(int(rng.integers(1, 4))):
        chosen = int(pool[rng.integers(len(pool))])
        side = int(rng.integers(SIDES[0], SIDES[1] + 1))
        spot = _free_spot(rng, side, squares)
        if spot is None:
            continue
        x, y = spot
        squares.append((x, y, side))
        scan = np.asarray(Image.fromarray(images[chosen], "L").resize((side, side), Image.BILINEAR), np.float64)
        ink = scan > INK * scan.max()
        region = canvas[y:y + side, x:x + side]
        np.maximum(region, scan, out=region)
        mask[y:y + side, x:x + side][ink] = targets[chosen] + 1
        rows, cols = np.nonzero(ink)
        boxes.append([x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1])
        digits.append(targets[chosen])
        sources.append(chosen)
    return Canvas(canvas.round().astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4),
                  np.asarray(digits, np.int64), mask, np.asarray(sources, np.int64))


def _free_spot(rng: np.random.Generator, side: int, squares: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """A top-left corner whose square overlaps none placed (so ink boxes have IoU 0 and masks never clash)."""
    for _ in range(PLACEMENT_TRIES):
        x, y = (int(v) for v in rng.integers(0, CANVAS_SIDE - side + 1, 2))
        if all(x + side <= a or a + s <= x or y + side <= b or b + s <= y for a, b, s in squares):
            return x, y
    return None


class DigitsCanvas(AnnotatedDataset):
    """``builtin:digits-detect[/split]`` or ``builtin:digits-seg[/split]``: train 1,500, val 300,
    test 300 canvases; no split is all 2,100 (train, then val, then test)."""

    natural_recipe = CANVAS_RECIPE

    def __init__(self, name: str, split: str | None, recipe: Recipe) -> None:
        source = f"builtin:{name}{'/' + split if split else ''}"
        if split is not None and split not in CANVAS_COUNTS:
            raise EdgekitError(f"{source}: unknown split (use {', '.join(CANVAS_COUNTS)})")
        super().__init__(source, recipe)
        self.task = CANVAS_SETS[name]
        digits = [str(d) for d in range(10)]
        self.classes = digits if self.task == "detection" else ["background", *digits]
        self.items = [(s, i) for s in CANVAS_COUNTS if split in (None, s) for i in range(CANVAS_COUNTS[s])]

    def __len__(self) -> int:
        return len(self.items)

    def canvas(self, index: int) -> Canvas:
        return render(*self.items[index])

    def image(self, index: int) -> Any:
        from PIL import Image

        return Image.fromarray(self.canvas(index).image, "L")

    def annotation(self, index: int) -> Boxes | np.ndarray:
        canvas = self.canvas(index)
        if self.task == "detection":
            return scale_boxes(canvas.boxes, canvas.digits, CANVAS_SIDE, CANVAS_SIDE, self.recipe)
        return resize_mask(canvas.mask, self.recipe)

    def identity(self, indices: Sequence[int]) -> str:
        digest = hashlib.sha256(f"{self.source}\0{VERSION}".encode())
        digest.update(hashlib.sha256(digits_file().read_bytes()).digest())
        digest.update(np.asarray(indices, np.int64).tobytes())
        return digest.hexdigest()
