"""YAML files validated by pydantic models, with one-line errors naming the file and the key.

Recipes, target profiles and pipeline files all go through here, so a typo anywhere reads the
same: ``targets/mine.yaml: key 'onnxruntime.fromat': unknown key``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from edgekit.errors import EdgekitError

ModelT = TypeVar("ModelT", bound=BaseModel)


def read_yaml_mapping(path: str | Path, what: str = "file") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgekitError(f"{path}: {what} is not readable UTF-8 text") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise EdgekitError(f"{path}: not valid YAML{where}") from exc
    if not isinstance(data, dict):
        raise EdgekitError(f"{path}: expected a YAML mapping at the top level")
    return data


def validate(model: type[ModelT], data: dict[str, Any], origin: str) -> ModelT:
    """``model.model_validate(data)``; the first problem becomes ``origin: key 'a.b': reason``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        reason = {"extra_forbidden": "unknown key", "missing": "required key is missing"}.get(error["type"], error["msg"])
        raise EdgekitError(f"{origin}: key '{key}': {reason}") from exc


def load_validated(model: type[ModelT], path: str | Path, what: str = "file") -> ModelT:
    return validate(model, read_yaml_mapping(path, what), str(path))
