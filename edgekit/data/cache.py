"""Prepared calibration tensors, computed once and shared by both quantizers.

The key hashes the selected samples' *content*, the recipe, the count and the seed, so an edited
image or recipe invalidates the cache, and ONNX Runtime and TFLite are always calibrated on the
very same tensors (TFLite gets them transposed to NHWC, never onnx2tf's own sample images).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgekit.atomic import atomic_path
from edgekit.data.base import DECODER_VERSION
from edgekit.data.datasets import load_all, open_dataset, sample_indices
from edgekit.data.recipes import Recipe, load_recipe
from edgekit.errors import EdgekitError, first_line

log = logging.getLogger(__name__)


def cache_dir(override: str | Path | None = None) -> Path:
    if override:
        return Path(override)
    env = os.environ.get("EDGEKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "edgekit"


def calibration_tensors(source: str | Path, recipe: Recipe | str, num_samples: int | None, seed: int = 0,
                        cache: str | Path | None = None, skip_bad: bool = False, progress: bool = True) -> np.ndarray:
    """``num_samples`` prepared float32 NCHW tensors from ``source`` (seeded, stratified, cached)."""
    recipe = load_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    dataset = open_dataset(source, recipe)
    indices = sample_indices(dataset, num_samples, seed)
    key = hashlib.sha256(json.dumps({"recipe": recipe.as_dict(), "skip_bad": skip_bad, "decoder": DECODER_VERSION},
                                    sort_keys=True).encode())
    key.update(dataset.identity(indices).encode())
    path = cache_dir(cache) / "calibration" / f"{key.hexdigest()[:32]}.npy"
    cached = read_entry(path, recipe)
    if cached is not None:
        return cached
    tensors, _, skipped = load_all(dataset, indices, skip_bad, progress="calibration data" if progress else None)
    if skipped:
        log.warning(f"skipped {len(skipped)} bad sample(s) in {dataset.source}; first: {skipped[0]}")
    if len(tensors) == 0:
        raise EdgekitError(f"{source}: no usable calibration samples")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, force=True) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, tensors)
    except (OSError, EdgekitError) as exc:  # a cache is an optimisation: an unwritable one only costs time
        log.warning(f"calibration cache {path.parent} is not writable ({exc}); continuing without it")
    return tensors


def read_entry(path: Path, recipe: Recipe) -> np.ndarray | None:
    """A cached tensor set, or None when absent. A truncated or corrupt entry (a crash, a full disk,
    another program) is discarded with a note, so it is rebuilt instead of feeding garbage on."""
    if not path.exists():
        return None
    try:
        tensors = np.load(path, allow_pickle=False)
        valid = (isinstance(tensors, np.ndarray) and tensors.dtype == np.float32 and tensors.ndim == 4
                 and len(tensors) > 0 and tuple(tensors.shape[1:]) == tuple(recipe.input_shape()[1:])
                 and bool(np.isfinite(tensors).all()))
        problem = "unexpected content"
    except Exception as exc:  # numpy raises ValueError, EOFError, OSError... for a damaged file
        valid, problem = False, first_line(exc)
    if valid:
        return tensors
    log.warning(f"calibration cache entry {path} is corrupt ({problem}); rebuilding it")
    try:
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError as exc:
        raise EdgekitError(f"{path}: corrupt calibration cache entry that cannot be removed ({exc.strerror})") from exc
    return None


def tensors_from_iterable(items: Iterable[Any], recipe: Recipe | str | None = None,
                          limit: int | None = None) -> np.ndarray:
    """Calibration tensors from any Python iterable (the API route): PIL images are prepared with
    ``recipe``; arrays are taken as already-prepared CHW (or NCHW batches) float tensors."""
    from PIL import Image

    recipe_obj = load_recipe(recipe) if recipe is not None and not isinstance(recipe, Recipe) else recipe
    prepared: list[np.ndarray] = []
    for item in items:
        if isinstance(item, Image.Image):
            if recipe_obj is None:
                raise EdgekitError("calibration iterable yields images: pass a recipe to prepare them")
            prepared.append(recipe_obj.apply(item))
        else:
            array = np.asarray(item, dtype=np.float32)
            if array.ndim == 4:
                prepared.extend(array)
            elif array.ndim == 3:
                prepared.append(array)
            else:
                raise EdgekitError(f"calibration iterable: item {len(prepared)} has shape {list(array.shape)}, "
                                   "expected C,H,W or N,C,H,W")
        if limit is not None and len(prepared) >= limit:
            break
    if not prepared:
        raise EdgekitError("calibration iterable: it yielded nothing")
    shapes = {p.shape for p in prepared}
    if len(shapes) > 1:
        raise EdgekitError(f"calibration iterable: items have different shapes {sorted(map(list, shapes))}")
    return np.stack(prepared[:limit] if limit else prepared)
