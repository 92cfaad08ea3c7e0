"""One resolver that turns what a user typed into a PyTorch module; every command uses it.

Accepted sources:
  ``torchvision:NAME``               a torchvision architecture (``kwargs`` e.g. num_classes); its
                                     single-stage detectors and segmenters come wrapped for the
                                     detection / segmentation task (:mod:`edgekit.adapters`)
  ``ultralytics:yolov8n.yaml``       an Ultralytics YOLO detector from its YAML (``kwargs`` nc, ch), or
  ``ultralytics:best.pt``            from a trained checkpoint, loaded without running its code
  ``module.path:factory``            a factory function importable from ``sys.path``
  ``path/to/file.py:factory``        a factory in a Python file
  ``model.pt`` / ``.pth``            an edgekit model file (what ``save_module`` writes), a state
                                     dict (then ``arch`` names the architecture to load it into),
                                     or a whole module saved with ``torch.save(model)``
  ``model.pt2``                      a ``torch.export`` ExportedProgram
``weights`` optionally loads a state dict into the built module. No weights are ever downloaded.

Nothing is unpickled except a whole-model pickle chosen as the model source itself (PyTorch:
unpickling runs code, so load only pickles you trust). Weights, state dicts and edgekit's own
files load with ``weights_only=True``; edgekit's own files record the architecture and the
pruned channel structure instead of pickled classes (:func:`save_module`).
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from edgekit.errors import EdgekitError, first_line

_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
MODEL_FORMAT = "edgekit.model/1"
ARCH_ATTR = "_edgekit_arch"  # set on loaded modules: how to rebuild them ({"spec", "kwargs"})
_TRUSTED_LOCATIONS = ("torchvision", "edgekit.zoo")
_ULTRALYTICS = "ultralytics:"  # built by edgekit.adapters.ultralytics, in Ultralytics' no-code-execution mode


@dataclasses.dataclass
class LoadedModel:
    """A module ready for inference plus where it came from (for the manifest)."""

    module: Any  # torch.nn.Module
    spec: str
    kwargs: dict[str, Any]
    exported_program: Any = None  # torch.export.ExportedProgram when loaded from .pt2
    arch: dict[str, Any] | None = None  # the architecture that rebuilds it: {"spec", "kwargs"}

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
    allow_pickle: bool = True,
) -> LoadedModel:
    """Resolve ``spec`` to an eval-mode module; see the module docstring for the forms.

    ``allow_pickle=False`` refuses even a whole-model pickle as the source (edgekit's own
    intermediates are never pickles, so a pickle there was put there by someone else)."""
    kwargs = dict(kwargs or {})
    path = Path(spec)
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".pt2") and ":" not in path.name and not spec.startswith(_ULTRALYTICS):
        if not path.exists():
            raise EdgekitError(f"{spec}: model file not found")
        if suffix == ".pt2":
            loaded = _load_exported_program(path, spec)
        else:
            loaded = _load_torch_file(path, spec, kwargs, arch, allow_pickle)
    elif ":" in spec:
        loaded = LoadedModel(_build_from_factory(spec, kwargs), spec, kwargs, arch={"spec": spec, "kwargs": kwargs})
    else:
        raise EdgekitError(
            f"{spec}: unknown model source; use torchvision:NAME, module:factory, file.py:factory, "
            "a .pt/.pth file or a .pt2 ExportedProgram"
        )
    if weights:
        load_state_dict_file(loaded.module, weights)
    if loaded.exported_program is None:  # an ExportedProgram's module is already in inference form
        loaded.module.eval()
    if loaded.arch is not None:
        setattr(loaded.module, ARCH_ATTR, loaded.arch)  # save_module records it; survives pruning in place
    return loaded


def _build_from_factory(spec: str, kwargs: dict[str, Any]) -> Any:
    import torch

    location, _, name = spec.rpartition(":")
    if not location or not name:
        raise EdgekitError(f"{spec}: expected SOURCE:NAME")
    if location == "torchvision":
        return _build_torchvision(name, kwargs)
    if spec.startswith(_ULTRALYTICS):
        from edgekit.adapters.ultralytics import build

        return build(spec[len(_ULTRALYTICS):], kwargs)
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
    from edgekit.adapters import torchvision_task_model

    adapted = torchvision_task_model(name, kwargs)  # a detector or segmenter, wrapped for its task
    if adapted is not None:
        return adapted
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


def _load_torch_file(
    path: Path, spec: str, kwargs: dict[str, Any], arch: str | None, allow_pickle: bool
) -> LoadedModel:
    obj = _load_weights_only(path)
    if obj is _NEEDS_PICKLE:
        if arch is not None or not allow_pickle:
            what = "--arch expects a state dict or an edgekit model file" if arch else "expected an edgekit model file"
            raise EdgekitError(f"{path}: holds pickled Python objects, not tensors; {what} (not unpickled: it could run code)")
        module = _unpickle_module(path)
        return LoadedModel(module, spec, kwargs, arch={"spec": str(path.resolve()), "kwargs": {}})
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        module, rebuilt_from = _rebuild(obj, path, arch, kwargs)
        return LoadedModel(module, spec, kwargs, arch=rebuilt_from)
    if isinstance(obj, dict):
        if arch is None:
            raise EdgekitError(f"{path}: holds a state dict, not a model; name its architecture with --arch")
        module = _build_architecture(arch, kwargs)
        _load_state_dict(module, _unwrap_state_dict(obj), path)
        return LoadedModel(module, arch, kwargs, arch={"spec": arch, "kwargs": kwargs})
    raise EdgekitError(f"{path}: holds a {type(obj).__name__}, expected a torch.nn.Module or a state dict")


_NEEDS_PICKLE = object()  # the file holds arbitrary Python objects: only unpickling could read it


def _load_weights_only(path: Path) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never code.

    Returns ``_NEEDS_PICKLE`` when the file holds other objects (a whole pickled module, or a
    crafted ``__reduce__``); PyTorch raises ``UnpicklingError`` exactly then."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return _NEEDS_PICKLE
    except Exception as exc:
        raise EdgekitError(f"{path}: not a torch.save file ({type(exc).__name__}: {first_line(exc)})") from exc


def _unpickle_module(path: Path) -> Any:
    """Unpickle a whole module the user chose as the model source (this runs code from the file,
    which is why only a model *source* ever gets here: PyTorch's advice is to unpickle only files
    you trust)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise EdgekitError(f"{path}: not a torch.save file ({type(exc).__name__}: {first_line(exc)})") from exc
    if not isinstance(obj, torch.nn.Module):
        raise EdgekitError(f"{path}: holds a {type(obj).__name__}, expected a torch.nn.Module or a state dict")
    # said once it loaded, so that a failure stays one line
    logging.getLogger(__name__).warning(f"{path} is a whole-model pickle; unpickling it ran code from the file "
                                        "(load only files you trust)")
    return obj


def _is_trusted_factory(spec: str) -> bool:
    """Factories edgekit may call when only a file names them: torchvision's classification models
    (built by name from its registry) and edgekit's own model zoo. Any other module path could
    name ``os:system``; a file must never choose code to run."""
    if spec.startswith(_ULTRALYTICS):
        return True  # Ultralytics' restricted mode: a YAML or checkpoint is data, never code
    location, _, name = spec.rpartition(":")
    return location in _TRUSTED_LOCATIONS and name.isidentifier() and not name.startswith("_")


def _build_architecture(spec: str, kwargs: dict[str, Any]) -> Any:
    """A fresh module for ``--arch``: a factory, or a whole-model pickle the user named."""
    path = Path(spec)
    if path.suffix.lower() in (".pt", ".pth") and ":" not in path.name and not spec.startswith(_ULTRALYTICS):
        if not path.is_file():
            raise EdgekitError(f"{spec}: --arch file not found")
        obj = _load_weights_only(path)
        if obj is _NEEDS_PICKLE:
            return _unpickle_module(path)
        if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
            return _rebuild(obj, path, None, kwargs)[0]
        raise EdgekitError(f"{spec}: --arch must build a model (a factory or a whole-model pickle), not a state dict")
    if ":" not in spec:
        raise EdgekitError(f"{spec}: --arch must be torchvision:NAME, module:factory, file.py:factory or a model .pt")
    return _build_from_factory(spec, kwargs)


def _rebuild(document: dict[str, Any], path: Path, arch: str | None, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """An edgekit model file -> its module: build the recorded (or ``--arch``) architecture fresh,
    then give it the saved channel structure and weights with Torch-Pruning's loader."""
    source = document.get("source")
    state, structure = document.get("state_dict"), document.get("structure")
    if not isinstance(state, dict) or not isinstance(structure, dict):
        raise EdgekitError(f"{path}: key 'state_dict'/'structure': missing from this edgekit model file")
    if arch is None:
        if not (isinstance(source, dict) and isinstance(source.get("spec"), str)
                and isinstance(source.get("kwargs", {}), dict)):
            raise EdgekitError(f"{path}: key 'source': no architecture recorded; name it with --arch SRC")
        arch, kwargs = source["spec"], dict(source.get("kwargs") or {})
        if not _is_trusted_factory(arch):
            raise EdgekitError(
                f"{path}: key 'source.spec': architecture {arch!r} is not torchvision's or edgekit.zoo's; "
                f"building it runs its code, so name it yourself: --arch {arch}")
    elif not kwargs and isinstance(source, dict) and isinstance(source.get("kwargs"), dict):
        kwargs = dict(source["kwargs"])
        if kwargs:  # said: the factory is the user's choice, its arguments (a file path, a flag) are the file's
            logging.getLogger(__name__).warning(
                f"{path}: building --arch {arch} with the keyword arguments the file records: "
                f"{json.dumps(kwargs, sort_keys=True)[:300]} (--kwargs replaces them)")
    module = _build_architecture(arch, kwargs)
    restore_structure(module, structure, state, path)
    return module, {"spec": arch, "kwargs": kwargs}


def model_structure(module: Any) -> dict[str, dict[str, Any]]:
    """Each submodule's plain attributes (``out_channels``, ``num_features``, ``groups`` ...): what
    structured pruning changes besides tensor shapes, in the form ``tp.state_dict`` records them."""
    return {name: {k: v for k, v in vars(m).items() if not k.startswith("_") and _plain(v)}
            for name, m in module.named_modules()}


def _plain(value: Any) -> bool:
    """What ``torch.load(weights_only=True)`` reads back: exact built-in types, not their subclasses
    (timm's ``Format``, a ``str`` enum that ViTs keep as ``output_fmt``, made a pruned DeiT's file
    unloadable: "Unsupported global: timm.layers.format.Format")."""
    if type(value) in (tuple, list):
        return all(_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


def restore_structure(module: Any, structure: dict[str, Any], state: dict[str, Any], path: Path) -> None:
    """Reshape a freshly built ``module`` to a saved (possibly pruned) one, with
    ``tp.load_state_dict``, then load the weights strictly.

    Only attributes the fresh module already has, with plain values, are set: a file may change
    a width, never add behaviour."""
    import torch
    import torch_pruning as tp

    full: dict[str, dict[str, Any]] = {}
    attributes: dict[str, dict[str, Any]] = {}
    for name, sub in module.named_modules():
        prefix = f"{name}." if name else ""
        params = {k: (torch.nn.Parameter(state[prefix + k], requires_grad=p.requires_grad)
                      if p is not None and isinstance(state.get(prefix + k), torch.Tensor) else p)
                  for k, p in sub._parameters.items()}
        buffers = {k: (state[prefix + k] if b is not None and isinstance(state.get(prefix + k), torch.Tensor) else b)
                   for k, b in sub._buffers.items()}
        full[name] = {"_parameters": params, "_buffers": buffers}
        saved = structure.get(name)
        if isinstance(saved, dict):
            own = vars(sub)
            attributes[name] = {k: v for k, v in saved.items()
                                if isinstance(k, str) and not k.startswith("_") and k in own and _plain(v)}
    tp.load_state_dict(module, {"full_state_dict": full, "attributions": attributes})
    _load_state_dict(module, state, path)


def _load_exported_program(path: Path, spec: str) -> LoadedModel:
    import torch

    import os

    # torch.export.load falls back to unpickling weights it cannot read safely; forbid that
    previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise EdgekitError(f"{path}: not a torch.export .pt2 file ({type(exc).__name__}: {first_line(exc)})") from exc
    finally:
        if previous is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
    return LoadedModel(program.module(), spec, {}, exported_program=program)


def _unwrap_state_dict(obj: dict[str, Any]) -> dict[str, Any]:
    for key in _STATE_DICT_KEYS:
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def load_state_dict_file(module: Any, weights: str) -> None:
    """Load a state-dict file into ``module``, strictly: missing or extra keys are an error.

    Never unpickles: a state dict (or a training checkpoint holding one) is tensors only."""
    path = Path(weights)
    if not path.exists():
        raise EdgekitError(f"{weights}: weights file not found")
    obj = _load_weights_only(path)
    if obj is _NEEDS_PICKLE:
        raise EdgekitError(f"{weights}: holds pickled Python objects, not a state dict (not unpickled: it could run code)")
    if isinstance(obj, dict) and obj.get("format") == MODEL_FORMAT:
        obj = obj.get("state_dict")
    if not isinstance(obj, dict):
        raise EdgekitError(f"{weights}: holds a {type(obj).__name__}, expected a state dict")
    _load_state_dict(module, _unwrap_state_dict(obj), path)


def copied_state(module: Any) -> dict[str, Any]:
    """A detached, contiguous CPU copy of ``module``'s state dict that keeps its per-module versions
    (``_metadata``): torchvision's MNASNet refuses a state dict without them ("version should be set
    to 1 or 2"), so a plain ``{k: v}`` copy made MNASNet model files and checkpoints unloadable."""
    import collections

    state = module.state_dict()
    copy = collections.OrderedDict((k, v.detach().to("cpu", copy=True).contiguous()) for k, v in state.items())
    copy._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return copy


def with_versions(module: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the module's own per-module versions where it carries none (a plain dict, a
    converted file): keys that fit this architecture are this architecture's version."""
    import collections

    if getattr(state, "_metadata", None) is not None:
        return state
    versioned = collections.OrderedDict(state)
    versioned._metadata = getattr(module.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    return versioned


def _load_state_dict(module: Any, state: dict[str, Any], path: Path) -> None:
    try:
        result = module.load_state_dict(with_versions(module, state), strict=False)
    except (RuntimeError, ValueError) as exc:  # shape mismatches raise even when strict=False; a module's own
        # _load_from_state_dict may refuse with ValueError (MNASNet: an unknown version)
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


def save_module(
    module: Any, path: str | Path, example_input: Any, force: bool = False, arch: dict[str, Any] | None = None
) -> Path:
    """Write a model file atomically: an edgekit model file for ``.pt``/``.pth``, an ExportedProgram
    for ``.pt2``.

    An edgekit model file is no pickle: ``{"format", "source": {"spec", "kwargs"}, "structure",
    "state_dict"}`` loads with ``weights_only=True``; the architecture is rebuilt from ``source``
    (``arch``, else what :func:`load_model` recorded on the module) and reshaped to ``structure``.
    """
    import torch

    from edgekit.atomic import atomic_path

    path = Path(path)
    if path.suffix.lower() not in (".pt", ".pth", ".pt2"):
        raise EdgekitError(f"{path}: a model file ends in .pt, .pth or .pt2")
    if path.suffix.lower() == ".pt2":
        with atomic_path(path, force) as tmp:
            program = torch.export.export(module.eval(), (example_input,))
            with open(tmp, "wb") as handle:
                torch.export.save(program, handle)
        return path
    document = model_document(module, arch, path)
    with atomic_path(path, force) as tmp:
        torch.save(document, tmp)
    return path


def model_document(module: Any, arch: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """The edgekit model file's content, checked to rebuild into ``module``'s exact shapes."""
    arch = arch or getattr(module, ARCH_ATTR, None)
    if not arch:
        raise EdgekitError(f"{path}: no architecture known to rebuild this model from; load it with --arch SRC "
                           "or write a .pt2 ExportedProgram")
    state = copied_state(module)
    document = {"format": MODEL_FORMAT, "source": {"spec": arch["spec"], "kwargs": dict(arch.get("kwargs") or {})},
                "structure": model_structure(module), "state_dict": state}
    fresh = _build_architecture(arch["spec"], dict(arch.get("kwargs") or {}))
    restore_structure(fresh, document["structure"], state, path)  # raises if the structure cannot be rebuilt
    return document


def check_runs_on(module: Any, shape: Sequence[int], label: str = "--input-shape") -> None:
    """Run ``module`` once on zeros of ``shape``: a wrong shape (or a model that cannot run at all) is
    named by ``label`` here, before any work. The module's train/eval mode is left as it was."""
    import torch

    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(*shape))
    except Exception as exc:  # a user's model can raise anything on a shape it cannot take
        raise EdgekitError(f"{label} {','.join(map(str, shape))}: the model cannot run on it "
                           f"({type(exc).__name__}: {first_line(exc)})") from exc
    finally:
        module.train(was_training)
