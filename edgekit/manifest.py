"""The sidecar manifest ``<artifact>.json`` written next to every artifact.

Why: an INT8 ``.tflite`` on its own says nothing about the model it came from, the images it was
calibrated on or how far it drifted from PyTorch. The manifest carries that history forward:
each stage copies its parent's manifest and appends one entry to ``stages``.

Schema (``edgekit.manifest/1``)::

    schema        "edgekit.manifest/1"
    artifact      file name of the artifact (the manifest sits beside it)
    format        "onnx" | "tflite" | "openvino-ir" (the runtime registry's formats) | "torch"
    sha256        hex digest of the artifact's bytes
    size_bytes    artifact size
    created       ISO-8601 UTC time
    source        {"spec": model source as given, "kwargs": {...}, "parent": parent artifact name,
                   "parent_sha256": ...}
    input         {"name", "shape", "dtype", "layout" ("NCHW"|"NHWC"), "dynamic_batch",
                   "preprocessing": calibration recipe or null, "quantization": {"scale", "zero_point"}
                   for integer inputs}
    outputs       [{"name", "shape", "dtype", "quantization"?}]
    versions      {package: version} of the libraries that made it
    stages        [{"stage": "export"|"prune"|"distill"|"quantize"|"sparsify"|..., ...details}]
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

from edgekit.atomic import write_text_atomic
from edgekit.errors import EdgekitError

SCHEMA = "edgekit.manifest/1"
_TRACKED_PACKAGES = (
    "edgekit", "torch", "torchvision", "torch-pruning", "onnx", "onnxruntime", "onnx2tf",
    "tensorflow", "ai-edge-litert", "openvino", "numpy",
)


def manifest_path(artifact: str | os.PathLike[str]) -> Path:
    """``net.onnx`` -> ``net.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape an artifact, read without importing them."""
    versions: dict[str, str] = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def format_of(path: str | os.PathLike[str]) -> str:
    """The model formats the runtime registry knows, PyTorch files, else the bare suffix."""
    from edgekit.runtime.registry import format_of as registry_format

    found = registry_format(str(path))
    if found is not None:
        return found.name
    suffix = Path(path).suffix.lower()
    return {".pt": "torch", ".pt2": "torch", ".pth": "torch"}.get(suffix, suffix.lstrip(".") or "unknown")


def read_manifest(artifact: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The artifact's manifest, or None when it has none."""
    path = manifest_path(artifact)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EdgekitError(f"{path}: not a readable manifest ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise EdgekitError(f"{path}: field 'schema' is not {SCHEMA!r}")
    return data


def new_manifest(
    artifact: str | os.PathLike[str],
    *,
    source: dict[str, Any] | None = None,
    input_spec: dict[str, Any] | None = None,
    outputs: list[dict[str, Any]] | None = None,
    stages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A manifest for an artifact that is already written (hash and size are read from disk)."""
    artifact = Path(artifact)
    return {
        "schema": SCHEMA,
        "artifact": artifact.name,
        "format": format_of(artifact),
        "sha256": sha256_file(artifact),
        "size_bytes": artifact.stat().st_size,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": source or {},
        "input": input_spec or {},
        "outputs": outputs or [],
        "versions": library_versions(),
        "stages": stages or [],
    }


def derive_manifest(
    parent: str | os.PathLike[str] | None,
    artifact: str | os.PathLike[str],
    stage: dict[str, Any],
    *,
    input_spec: dict[str, Any] | None = None,
    outputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The manifest of ``artifact`` made from ``parent`` by ``stage``: history carried, stage appended."""
    parent_manifest = read_manifest(parent) if parent else None
    base = copy.deepcopy(parent_manifest) if parent_manifest else {}
    source = dict(base.get("source", {}))
    if parent is not None:
        source["parent"] = Path(parent).name
        source["parent_sha256"] = sha256_file(parent) if Path(parent).is_file() else None
    merged_input = dict(base.get("input", {}))
    merged_input.update(input_spec or {})
    return new_manifest(
        artifact,
        source=source,
        input_spec=merged_input,
        outputs=outputs if outputs is not None else base.get("outputs", []),
        stages=[*base.get("stages", []), stage],
    )


def write_manifest(artifact: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write the manifest beside its artifact (atomically; it follows the artifact's --force)."""
    return write_text_atomic(manifest_path(artifact), json.dumps(manifest, indent=2, default=_jsonable) + "\n", force=True)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# What a manifest records that a later command would otherwise ask for again (eval's --recipe and
# --task): the artifact already knows how it was calibrated, so the user need not repeat it.

def _latest(manifest: dict[str, Any], *keys: tuple[str, ...]) -> tuple[Any, str] | None:
    """The newest stage's value at one of the key paths, with its field name for messages."""
    stages = manifest.get("stages")
    for index in reversed(range(len(stages) if isinstance(stages, list) else 0)):
        for path in keys:
            value: Any = stages[index]
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                return value, f"stages[{index}].{'.'.join(path)}"
    return None


def recorded_recipe(artifact: str | os.PathLike[str]) -> Any:
    """The preprocessing recipe (a :class:`~edgekit.data.Recipe`) the artifact's manifest records, or
    None: the newest stage's recipe name (quantize: ``calibration.recipe``), taken whole from
    ``input.preprocessing`` where that is the same recipe (exact even for a user's YAML file that is
    not at hand), else loaded by name."""
    from edgekit.data.recipes import load_recipe, recipe_from_mapping

    manifest = read_manifest(artifact)
    if manifest is None:
        return None
    where = manifest_path(artifact)
    found = _latest(manifest, ("calibration", "recipe"), ("recipe",))
    recorded = manifest.get("input", {}).get("preprocessing") if isinstance(manifest.get("input"), dict) else None
    if isinstance(recorded, dict) and (found is None or recorded.get("name") == found[0]):
        return recipe_from_mapping(recorded, f"{where}: field 'input.preprocessing'")
    if found is None:
        return None
    name, field = found
    if not isinstance(name, str):
        raise EdgekitError(f"{where}: field '{field}' is not a recipe name")
    try:
        return load_recipe(name)
    except EdgekitError as exc:
        raise EdgekitError(f"{where}: field '{field}' names recipe {name!r}, which is not here ({exc}); "
                           "pass --recipe") from exc


def recorded_task(artifact: str | os.PathLike[str]) -> str | None:
    """The task the artifact's manifest records (the newest stage's ``task``, else a top-level one), or None."""
    manifest = read_manifest(artifact)
    if manifest is None:
        return None
    found = _latest(manifest, ("task",))
    task = found[0] if found else manifest.get("task")
    if task is not None and not isinstance(task, str):
        raise EdgekitError(f"{manifest_path(artifact)}: field '{found[1] if found else 'task'}' is not a task name")
    return task
