"""Preprocessing recipes: how an image becomes the tensor a model expects.

One recipe feeds calibration, training and evaluation, so the three never disagree about resize,
crop, colour, scaling or normalisation (a classic source of "INT8 lost 20 points" reports that are
really preprocessing bugs). Recipes are YAML files; ``imagenet`` and ``digits`` ship in
``calibration/``, and users pass the path of their own.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator

from edgekit.errors import EdgekitError
from edgekit.yamlfile import load_validated, validate


MAX_SIDE = 8192  # pixels per side; larger is a typo and would exhaust memory per image


class _RecipeFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    size: tuple[int, int]
    resize: int | None = None
    center_crop: bool = False
    color_mode: Literal["rgb", "gray"] = "rgb"
    gray_to_rgb: bool = False
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    scale: float = 1.0 / 255.0
    mean: list[float]
    std: list[float]
    layout: Literal["NCHW"] = "NCHW"

    @field_validator("std")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not math.isfinite(v) or v <= 0 for v in value):
            raise ValueError("every std must be a positive finite number")
        return value

    @field_validator("mean")
    @classmethod
    def _finite(cls, value: list[float]) -> list[float]:
        if any(not math.isfinite(v) for v in value):
            raise ValueError("every mean must be a finite number")
        return value

    @field_validator("size")
    @classmethod
    def _size(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(not 1 <= v <= MAX_SIDE for v in value):
            raise ValueError(f"height and width must be between 1 and {MAX_SIDE} pixels")
        return value

    @field_validator("resize")
    @classmethod
    def _resize(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise ValueError(f"must be between 1 and {MAX_SIDE} pixels")
        return value

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0:
            raise ValueError("must be a finite, non-zero number")
        return value


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A validated recipe; :meth:`apply` turns a PIL image into a float32 CHW array."""

    name: str
    size: tuple[int, int]
    resize: int | None
    center_crop: bool
    color_mode: str
    gray_to_rgb: bool
    interpolation: str
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    description: str = ""

    @property
    def channels(self) -> int:
        return 3 if self.color_mode == "rgb" else 1

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, self.channels, *self.size)

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["size"] = list(self.size)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    def apply(self, image: Any) -> np.ndarray:
        """Resize (shorter side), centre-crop or resize to ``size``, convert colour, scale, normalise."""
        from PIL import Image

        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[self.interpolation]
        image = image.convert("RGB" if self.color_mode == "rgb" else "L")
        height, width = self.size
        if self.resize:
            w, h = image.size
            factor = self.resize / min(w, h)
            image = image.resize((max(1, round(w * factor)), max(1, round(h * factor))), resample)
        if self.center_crop:
            w, h = image.size
            left, top = max(0, (w - width) // 2), max(0, (h - height) // 2)
            image = image.crop((left, top, left + width, top + height))
        if image.size != (width, height):
            image = image.resize((width, height), resample)
        array = np.asarray(image, dtype=np.float32) * self.scale
        if array.ndim == 2:
            array = array[:, :, None]
        array = (array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(array.transpose(2, 0, 1))


def recipes_dir() -> Path:
    """The shipped recipes: ``calibration/`` in a checkout, ``edgekit/_shipped/calibration`` in a wheel."""
    return Path(__file__).resolve().parent.parent / "_shipped" / "calibration"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in recipes_dir().glob("*.yaml"))


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a user's YAML file by path."""
    if isinstance(name_or_path, Recipe):
        return name_or_path
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or path.is_file()):
        path = recipes_dir() / f"{text}.yaml"
        if not path.is_file():
            raise EdgekitError(f"--recipe: no recipe named {text!r} (shipped: {', '.join(available_recipes())}; or a .yaml path)")
    return _build(load_validated(_RecipeFile, path, "recipe file"), str(path))


def recipe_from_mapping(data: dict[str, Any], origin: str) -> Recipe:
    """A recipe recorded as a mapping (a manifest's ``input.preprocessing``), checked like a YAML file;
    ``origin`` names the file and field in the one-line error."""
    if not isinstance(data, dict):
        raise EdgekitError(f"{origin}: not a recipe mapping")
    return _build(validate(_RecipeFile, data, origin), origin)


def _build(parsed: _RecipeFile, origin: str) -> Recipe:
    channels = 3 if parsed.color_mode == "rgb" else 1
    for key in ("mean", "std"):
        if len(getattr(parsed, key)) not in (1, channels):
            raise EdgekitError(f"{origin}: key '{key}': needs 1 or {channels} values for color_mode {parsed.color_mode}")
    return Recipe(
        name=parsed.name, size=tuple(parsed.size), resize=parsed.resize, center_crop=parsed.center_crop,
        color_mode=parsed.color_mode, gray_to_rgb=parsed.gray_to_rgb, interpolation=parsed.interpolation,
        scale=parsed.scale, mean=tuple(parsed.mean), std=tuple(parsed.std), layout=parsed.layout,
        description=parsed.description,
    )
