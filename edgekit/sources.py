"""One resolver that turns what a user typed into a PyTorch module; every command uses it.

Accepted sources:
  ``torchvision:NAME``               a torchvision architecture (``kwargs`` e.g. num_classes)
  ``module.path:factory``            a factory function importable from ``sys.path``
  ``path/to/file.py:factory``        a factory in a Python file
  ``model.pt`` / ``.pth``            a whole module saved with ``torch.save(model)``, or a state
                                     dict (then ``arch`` names the architecture to load it into)
  ``model.pt2``                      a ``torch.export`` ExportedProgram
``weights`` optionally loads a state dict into the built module. No weights are ever downloaded.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


@dataclasses.dataclass
class LoadedModel:
    """A module ready for inference plus where it came from (for the manifest)."""

    module: Any  # torch.nn.Module
    spec: str
    kwargs: dict[str, Any]
    exported_program: Any = None  # torch.export.ExportedProgram when loaded from .pt2

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "kwargs": self.kwargs}


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--kwargs '{"num_classes": 10}'`` -> dict, with a clear error for bad JSON."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EdgekitError(f"--kwargs: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(value, dict):
        raise EdgekitError("--kwargs: must be a JSON object, e.g. '{\"num_classes\": 10}'")
    return value


def load_model(
    spec: str,
    kwargs: dict[str, Any] | None = None,
    *,
    arch: str | None = None,
    weights: str | None = None,
) -> LoadedModel:
    """Resolve ``spec`` to an eval-mode module; see the module docstring for the forms."""
    kwargs = dict(kwargs or {})
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".pt2") and ":" not in path.name:
        if not path.exists():
            raise EdgekitError(f"{spec}: model file not found")
        if suffix == ".pt2":
            loaded = _load_exported_program(path, spec)
        else:
            loaded = _load_torch_file(path, spec, kwargs, arch)
    elif ":" in spec:
        loaded = LoadedModel(_build_from_factory(spec, kwargs), spec, kwargs)
    else:
        raise EdgekitError(
            f"{spec}: unknown model source; use torchvision:NAME, module:factory, file.py:factory, "
            "a .pt/.pth file or a .pt2 ExportedProgram"
        )
    if weights:
        load_state_dict_file(loaded.module, weights)
    if loaded.exported_program is None:  # an ExportedProgram's module is already in inference form
        loaded.module.eval()
    return loaded


def _build_from_factory(spec: str, kwargs: dict[str, Any]) -> Any:
    import torch

    location, _, name = spec.rpartition(":")
    if not location or not name:
        raise EdgekitError(f"{spec}: expected SOURCE:NAME")
    if location == "torchvision":
        return _build_torchvision(name, kwargs)
    factory = _resolve_factory(location, name, spec)
    try:
        module = factory(**kwargs)
    except Exception as exc:  # a user's factory can raise anything
        raise EdgekitError(f"{spec}: factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, torch.nn.Module):
        raise EdgekitError(f"{spec}: factory returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _build_torchvision(name: str, kwargs: dict[str, Any]) -> Any:
    import torchvision

    if kwargs.get("weights") not in (None, "None"):
        raise EdgekitError(
            f"torchvision:{name}: pretrained weights are never downloaded; pass --weights FILE instead"
        )
    kwargs.pop("weights", None)
    available = set(torchvision.models.list_models(module=torchvision.models))
    if name not in available:
        close = sorted(n for n in available if name.lower()[:4] in n)[:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EdgekitError(f"torchvision:{name}: no such torchvision classification model{hint}")
    try:
        return torchvision.models.get_model(name, weights=None, **kwargs)
    except Exception as exc:
        raise EdgekitError(f"torchvision:{name}: could not build ({type(exc).__name__}: {exc})") from exc


def _resolve_factory(location: str, name: str, spec: str) -> Any:
    if location.endswith(".py"):
        file = Path(location)
        if not file.exists():
            raise EdgekitError(f"{location}: Python file not found")
        module_name = f"_edgekit_user_{abs(hash(str(file.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(module_name, file)
        assert module_spec and module_spec.loader
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # pickling a module built here needs it importable
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise EdgekitError(f"{location}: import failed ({type(exc).__name__}: {exc})") from exc
    else:
        if str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))
        try:
            module = importlib.import_module(location)
        except Exception as exc:
            raise EdgekitError(f"{spec}: cannot import module {location!r} ({type(exc).__name__}: {exc})") from exc
    factory = getattr(module, name, None)
    if factory is None or not callable(factory):
        raise EdgekitError(f"{spec}: {location!r} has no callable named {name!r}")
    return factory


def _load_torch_file(path: Path, spec: str, kwargs: dict[str, Any], arch: str | None) -> LoadedModel:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise EdgekitError(f"{path}: not a torch.save file ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, torch.nn.Module):
        return LoadedModel(obj, spec, kwargs)
    if isinstance(obj, dict):
        if arch is None:
            raise EdgekitError(f"{path}: holds a state dict, not a model; name its architecture with --arch")
        module = _build_from_factory(arch, kwargs)
        _load_state_dict(module, _unwrap_state_dict(obj), path)
        return LoadedModel(module, arch, kwargs)
    raise EdgekitError(f"{path}: holds a {type(obj).__name__}, expected a torch.nn.Module or a state dict")


def _load_exported_program(path: Path, spec: str) -> LoadedModel:
    import torch

    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise EdgekitError(f"{path}: not a torch.export .pt2 file ({type(exc).__name__}: {exc})") from exc
    return LoadedModel(program.module(), spec, {}, exported_program=program)


def _unwrap_state_dict(obj: dict[str, Any]) -> dict[str, Any]:
    for key in _STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def load_state_dict_file(module: Any, weights: str) -> None:
    """Load a state-dict file into ``module``, strictly: missing or extra keys are an error."""
    import torch

    path = Path(weights)
    if not path.exists():
        raise EdgekitError(f"{weights}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise EdgekitError(f"{weights}: not a torch.save file ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise EdgekitError(f"{weights}: holds a {type(obj).__name__}, expected a state dict")
    _load_state_dict(module, _unwrap_state_dict(obj), path)


def _load_state_dict(module: Any, state: dict[str, Any], path: Path) -> None:
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when strict=False
        first = str(exc).strip().splitlines()[-1].strip()
        raise EdgekitError(f"{path}: state dict does not fit the architecture: {first}") from exc
    problems = []
    if result.missing_keys:
        problems.append(f"missing keys {_clip(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected keys {_clip(result.unexpected_keys)}")
    if problems:
        raise EdgekitError(f"{path}: state dict does not fit the architecture: {'; '.join(problems)}")


def _clip(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def save_module(module: Any, path: str | Path, example_input: Any, force: bool = False) -> Path:
    """Write a loadable model file atomically: ``torch.save(module)``, or an ExportedProgram for ``.pt2``."""
    import torch

    from edgekit.atomic import atomic_path

    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth", ".pt2"):
        raise EdgekitError(f"{path}: a model file ends in .pt, .pth or .pt2")
    with atomic_path(path, force) as tmp:
        if path.suffix.lower() == ".pt2":
            program = torch.export.export(module.eval(), (example_input,))
            with open(tmp, "wb") as handle:
                torch.export.save(program, handle)
        else:
            torch.save(module, tmp)
    return path
