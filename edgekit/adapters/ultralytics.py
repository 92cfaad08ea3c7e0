"""Ultralytics YOLO detectors as edgekit models: ``ultralytics:yolov8n.yaml`` (any model YAML
Ultralytics ships, or a user's YAML file), built with random weights, or ``ultralytics:best.pt``, a
trained checkpoint. Nothing is downloaded, and nothing from a file runs: Ultralytics' restricted
mode (``ULTRALYTICS_SAFE_LOAD``) loads checkpoints with ``torch.load(weights_only=True)`` against
an allow-list of its own layer classes and builds YAML models without ``eval``.

The model always answers in the detection task's layout ``[N, 4 + classes, anchors]`` (what
Ultralytics' own ONNX export gives: boxes cx,cy,w,h in input pixels, then sigmoid class scores),
in training mode too, so edgekit's detection objective and distillation read the same tensor as
eval does. End-to-end heads (YOLOv10/YOLO26) answer with their one-to-many branch, whose output
has this layout; the host's NMS replaces their in-graph top-k.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekit.errors import EdgekitError, first_line

_QUIET = {"ULTRALYTICS_SAFE_LOAD": "1", "YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False"}
KWARGS = ("nc", "ch")  # what a YAML build takes: classes and input channels
TASKS = {"detect": "detection", "segment": "segmentation (instance)", "classify": "classification",
         "pose": "pose", "obb": "oriented boxes"}


class YoloDetector(nn.Module):
    """An Ultralytics ``DetectionModel`` whose output is the decoded ``[N, 4 + nc, anchors]`` tensor
    in every mode (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        head = self.head
        head.export, head.format = True, "onnx"  # eval returns the decoded tensor alone, as in an ONNX export
        if getattr(head, "one2one_cv2", None) is not None:
            head.end2end = False  # the one-to-many branch: the layout the host's NMS reads

    @property
    def head(self) -> nn.Module:
        return self.model.model[-1]

    @property
    def num_classes(self) -> int:
        return int(self.head.nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        if isinstance(out, dict):  # training: raw per-level predictions, decoded as eval decodes them
            out = self.head._inference(out.get("one2many", out))
        return out


def build(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """``name`` is a model YAML (Ultralytics' bundled name or a file) or a checkpoint ``.pt``."""
    _restricted_mode()
    suffix = Path(name).suffix.lower()
    if suffix == ".pt":
        if kwargs:
            raise EdgekitError(f"ultralytics:{name}: a checkpoint fixes its classes and channels; --kwargs "
                               f"{', '.join(kwargs)} cannot change them")
        model = _load_checkpoint(Path(name))
    elif suffix in (".yaml", ".yml"):
        unknown = sorted(set(kwargs) - set(KWARGS))
        if unknown:
            raise EdgekitError(f"ultralytics:{name}: --kwargs {', '.join(unknown)}: a YAML build takes only "
                               f"{', '.join(KWARGS)} (classes, input channels)")
        model = _from_yaml(name, kwargs)
    else:
        raise EdgekitError(f"ultralytics:{name}: expected a model YAML (e.g. yolov8n.yaml, yolo11n.yaml) or a "
                           "trained checkpoint .pt")
    return _wrap(model, name)


def _restricted_mode() -> None:
    """Set before Ultralytics is first imported (it reads these once), and undo its process-wide
    patches: on import it replaces ``PIL.Image.open`` (a file PIL cannot identify then
    raises ModuleNotFoundError for ``pi_heif``, or pip-installs it, instead of PIL's own error, which
    edgekit names as a corrupt image) and ``torch.save``; they are put back, whoever imported it first.
    edgekit calls neither through Ultralytics."""
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"
    import ultralytics.nn.tasks  # noqa: F401 - the first import applies the patches
    from PIL import Image
    from ultralytics.utils import patches

    if Image.open is patches.image_open:
        Image.open = patches._image_open  # the originals, as Ultralytics kept them
    if torch.save is patches.torch_save:
        torch.save = patches._torch_save


def _from_yaml(name: str, kwargs: dict[str, Any]) -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel, guess_model_task, yaml_model_load

    if Path(name).parent != Path(".") and not Path(name).is_file():
        raise EdgekitError(f"ultralytics:{name}: model YAML not found")
    try:
        config = yaml_model_load(name)
    except Exception as exc:  # a bundled name that does not exist, or a YAML that does not parse
        raise EdgekitError(f"ultralytics:{name}: not a model YAML Ultralytics knows "
                           f"({type(exc).__name__}: {first_line(exc)})") from exc
    task = guess_model_task(config)
    if task != "detect":
        raise _unsupported(name, task)
    try:
        return DetectionModel(config, ch=int(kwargs.get("ch", 3)), nc=kwargs.get("nc"), verbose=False)
    except Exception as exc:
        raise EdgekitError(f"ultralytics:{name}: could not build ({type(exc).__name__}: {first_line(exc)})") from exc


def _load_checkpoint(path: Path) -> nn.Module:
    if not path.is_file():  # checked here: Ultralytics would otherwise try to download a missing name
        raise EdgekitError(f"ultralytics:{path}: checkpoint not found")
    from ultralytics.nn.tasks import guess_model_task, torch_safe_load

    try:
        # an absolute path: given a bare official name (yolov8n.pt) whose file is corrupt, Ultralytics
        # deletes the file and downloads the official one instead
        checkpoint, _ = torch_safe_load(str(path.resolve()), safe_only=True)
    except Exception as exc:  # a class outside the allow-list, a corrupt file
        raise EdgekitError(f"ultralytics:{path}: not loadable without running its code "
                           f"({type(exc).__name__}: {first_line(exc)})") from exc
    model = (checkpoint.get("ema") or checkpoint.get("model")) if isinstance(checkpoint, dict) else None
    if not isinstance(model, nn.Module):
        raise EdgekitError(f"ultralytics:{path}: key 'model': no model in this checkpoint")
    task = guess_model_task(model)
    if task != "detect":
        raise _unsupported(str(path), task)
    return model.float()


def _unsupported(name: str, task: str) -> EdgekitError:
    return EdgekitError(f"ultralytics:{name}: a {TASKS.get(task, task)} model; edgekit takes Ultralytics "
                        "detection models (its tasks score detection by mAP; instance masks are not scored yet)")


def _wrap(model: nn.Module, name: str) -> YoloDetector:
    from ultralytics.nn.modules.head import Detect

    if not isinstance(model.model[-1], Detect):
        raise EdgekitError(f"ultralytics:{name}: the last layer is {type(model.model[-1]).__name__}, not a Detect head")
    split_chunked_convs(model)
    fixed = {id(p) for p in model.model[-1].dfl.parameters()} if hasattr(model.model[-1], "dfl") else set()
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) not in fixed)  # checkpoints are saved frozen; DFL never trains
    return YoloDetector(model).eval()


class _SplitC2f:
    """C2f's computation with its ``cv1`` as two convolutions (``cv0``: the first half of the
    channels, ``cv1``: the second) instead of one whose output is chunked: Torch-Pruning cannot map
    pruned channels through ``chunk``, and this is the form of its own YOLOv8 recipe (C2f_v2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class _SplitC2PSA:
    """C2PSA (YOLO11) with the same split as :class:`_SplitC2f`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.cv0(x), self.cv1(x)
        return self.cv2(torch.cat((a, self.m(b)), 1))


def split_chunked_convs(model: nn.Module) -> int:
    """Rewrite, in place and exactly, every block whose ``cv1`` output is chunked in two (C2f and the
    blocks that share its forward, e.g. YOLO11's C3k2, and C2PSA) into the two-convolution form;
    returns how many. Every build applies it, so a pruned model file rebuilds to the same tree."""
    from ultralytics.nn.modules.block import C2PSA, C2f

    rewrites = {C2f.forward: _SplitC2f, C2PSA.forward: _SplitC2PSA}
    count = 0
    for module in list(model.modules()):
        split = rewrites.get(type(module).forward)
        if split is None or hasattr(module, "cv0"):
            continue
        half = module.cv1.conv.out_channels // 2
        module.cv0 = _channels(module.cv1, 0, half)
        module.cv1 = _channels(module.cv1, half, 2 * half)
        module.__class__ = type(f"{type(module).__name__}Split", (split, type(module)), {})
        count += 1
    return count


def _channels(conv: nn.Module, start: int, stop: int) -> nn.Module:
    """A copy of an Ultralytics ``Conv`` (conv + BatchNorm + activation) keeping output channels
    ``start:stop``."""
    part = copy.deepcopy(conv)
    keep = slice(start, stop)
    part.conv.weight = nn.Parameter(conv.conv.weight.detach()[keep].clone())
    if conv.conv.bias is not None:
        part.conv.bias = nn.Parameter(conv.conv.bias.detach()[keep].clone())
    part.conv.out_channels = stop - start
    bn = getattr(part, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        bn.weight = nn.Parameter(conv.bn.weight.detach()[keep].clone())
        bn.bias = nn.Parameter(conv.bn.bias.detach()[keep].clone())
        bn.running_mean = conv.bn.running_mean[keep].clone()
        bn.running_var = conv.bn.running_var[keep].clone()
        bn.num_features = stop - start
    return part
