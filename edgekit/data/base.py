"""The ``Dataset`` interface and what every source shares (image decoding, the shipped digits).

Its own module so the annotated sources (:mod:`edgekit.data.annotated` and friends) can subclass
``Dataset`` while :func:`edgekit.data.datasets.open_dataset` dispatches to them, with no import cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import collections
import logging

import numpy as np

from edgekit.data.recipes import Recipe
from edgekit.errors import EdgekitError, first_line

_log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# photo formats a user's folder may hold that edgekit does not read: named when left out, never silently
UNREAD_IMAGE_SUFFIXES = (".heic", ".heif", ".avif", ".tif", ".tiff", ".gif", ".jp2", ".dng", ".cr2", ".nef", ".arw",
                         ".ppm", ".pgm", ".jxl")
DIGITS_SPLITS = {"train": (0.0, 0.70), "val": (0.70, 0.85), "test": (0.85, 1.0)}
_GRAY_MODES = ("L", "LA", "1", "I", "I;16", "F", "P")


class BadSample(EdgekitError):
    """One unreadable or unsuitable sample; ``skip_bad`` turns it into a count instead of an error."""


class Dataset:
    """Common interface: ``len``, ``labels``, ``classes``, ``get(i) -> (CHW float32, label or -1)``."""

    source: str
    labels: list[int] | None = None
    classes: list[str] | None = None

    def __init__(self, source: str, recipe: Recipe) -> None:
        self.source = source
        self.recipe = recipe

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def get(self, index: int) -> tuple[np.ndarray, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def identity(self, indices: Sequence[int]) -> str:
        """A digest of what ``indices`` select, by content: the cache key of prepared tensors."""
        raise NotImplementedError  # pragma: no cover

    def label(self, index: int) -> int:
        return self.labels[index] if self.labels is not None else -1


# How image files are decoded; in every cache key and data fingerprint, so tensors decoded before a
# change are never reused after it. 2: EXIF orientation applied (``upright``), 16-bit grayscale
# scaled to 8 bits (``eight_bit``).
DECODER_VERSION = 2
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")  # how PIL opens a 16-bit grayscale PNG
_EXIF_ORIENTATION = 0x0112
_QUARTER_TURNS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def upright(image: Any) -> Any:
    """``image`` as a viewer shows it, turned and flipped per its EXIF orientation. Why: a phone stores
    a portrait photo's pixels sideways with a tag; its YOLO or COCO labels were drawn on the upright
    image (Ultralytics reads it upright, OpenCV's imread too), so sideways pixels miss every box."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def upright_size(image: Any) -> tuple[int, int]:
    """(width, height) of :func:`upright`'s image, from the header alone."""
    width, height = image.size
    return (height, width) if image.getexif().get(_EXIF_ORIENTATION) in _QUARTER_TURNS else (width, height)


def eight_bit(image: Any) -> Any:
    """A 16-bit grayscale image as the 8-bit one it is (``round(v / 257)``: 65535 -> 255); other modes as
    they are. Why: PIL's own conversion to 8 bits clips at 255, so a 16-bit PNG (a thermal or depth
    camera's, a scan) became almost all white: a 0..65535 ramp gave 17 distinct values, 99.6% of them 1.0."""
    if image.mode not in _SIXTEEN_BIT_MODES:
        return image
    from PIL import Image

    values = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
    return Image.fromarray(np.round(values / 257).astype(np.uint8), mode="L")


def images_under(root: Path) -> list[Path]:
    """Every image file edgekit reads under ``root``, recursively, sorted; photos of other formats are
    warned about once per folder (an iPhone's HEIC, a scanner's TIFF left out of a set unnoticed)."""
    files, unread = [], collections.Counter()
    for path in root.rglob("*"):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES and path.is_file():
            files.append(path)
        elif suffix in UNREAD_IMAGE_SUFFIXES and path.is_file():
            unread[suffix] += 1
    if unread and str(root) not in _WARNED_FOLDERS:
        _WARNED_FOLDERS.add(str(root))
        kinds = ", ".join(f"{suffix}: {count}" for suffix, count in sorted(unread.items()))
        _log.warning(f"{root}: left out {sum(unread.values())} image file(s) of a format edgekit does not read "
                     f"({kinds}); convert them to PNG or JPEG to use them")
    return sorted(files)


_WARNED_FOLDERS: set[str] = set()


def unreadable(path: Path, exc: BaseException, what: str = "image") -> BadSample:
    """The :class:`BadSample` for a file PIL could not decode: a corrupt one, or one over PIL's
    decompression-bomb limit (about 179 M pixels, 0.5 GB decoded), which is refused rather than
    decoded because a crafted few-KB PNG can claim any size."""
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return BadSample(f"{path}: {what} too large to decode safely ({first_line(exc)}); downscale it, or --skip-bad")
    return BadSample(f"{path}: corrupt or unreadable {what} ({first_line(exc)})")


def decode_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file it cannot decode (see :func:`unreadable`)."""
    from PIL import Image, UnidentifiedImageError

    return UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError


def read_image(path: Path, recipe: Recipe) -> Any:
    """The decoded PIL image at ``path``; a corrupt file, or a grayscale one for an RGB recipe that
    does not allow it, is a :class:`BadSample` naming the file (``--skip-bad`` can count it instead)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            if recipe.color_mode == "rgb" and image.mode in _GRAY_MODES and not recipe.gray_to_rgb:
                if image.mode != "P":
                    raise BadSample(
                        f"{path}: grayscale image ({image.mode}) for an RGB recipe "
                        f"'{recipe.name}' (set gray_to_rgb: true in the recipe, or --skip-bad)"
                    )
            return eight_bit(upright(image))  # a copy, turned upright
    except BadSample:
        raise
    except decode_errors() as exc:
        raise unreadable(path, exc) from exc


def digits_file() -> Path:
    """The shipped digits (in the package as ``_shipped/calibration``, a link to ``calibration/``)."""
    return Path(__file__).resolve().parent.parent / "_shipped" / "calibration" / "digits.npz"


def _digits_split(targets: np.ndarray, split: str | None, source: str = "builtin:digits") -> np.ndarray:
    """Deterministic stratified split: each class's samples shuffled with seed 0, cut 70/15/15."""
    if split is None:
        return np.arange(len(targets))
    if split not in DIGITS_SPLITS:
        raise EdgekitError(f"{source}/{split}: unknown split (use {', '.join(DIGITS_SPLITS)})")
    low, high = DIGITS_SPLITS[split]
    rng = np.random.default_rng(0)
    chosen = []
    for label in np.unique(targets):
        members = np.flatnonzero(targets == label)
        rng.shuffle(members)
        chosen.extend(members[int(round(low * len(members))):int(round(high * len(members)))])
    return np.sort(np.asarray(chosen))
