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
    _check_expanded_size(data, path)
    return data


MAX_YAML_VALUES = 100_000  # a recipe, profile or pipeline has tens; an alias bomb has billions


def _check_expanded_size(data: Any, path: Path) -> None:
    """Count values as validation and hashing will see them, aliases expanded: a few lines of nested
    anchors (``b: &b [*a, *a, ...]``) stand for billions of values and would exhaust memory there."""
    seen, stack = 0, [data]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise EdgekitError(f"{path}: more than {MAX_YAML_VALUES:,} values once anchors and aliases are "
                               "expanded (an alias bomb, or a recursive alias)")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


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
