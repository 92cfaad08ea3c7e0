"""Attention blocks, made prunable within what torch-pruning 1.6 maps correctly.

* ``nn.MultiheadAttention`` (torchvision's ViT): torch-pruning narrows the embedding width and
  updates the module's ``embed_dim``/``head_dim`` when the widths stay a multiple of the head count
  (every head keeps an equal share). Handing it the head counts (``num_heads=``) instead made it
  leave the embedding width alone (measured: a 64-wide ViT stayed 64 wide, only its MLPs shrank).
  torchvision's ViT reshapes its patch embedding with ``self.hidden_dim``, a plain int that
  pruning does not touch: it is set from the pruned ``conv_proj`` afterwards.
* Windowed attention (Swin V1/V2): its relative-position tables and shifted-window masks are
  indexed by head and position, which torch-pruning cannot map (building the groups of swin_t grew
  past 10 GB here). Only the MLP hidden width of each block is pruned (fc1's outputs, fc2's
  inputs): the attention and the residual stream are protected, and the report's prunable share
  of MACs says how much that leaves.
* Any other attention module (a class named ``*Attention*``: MaxViT's relative-position attention,
  the hybrids users bring) reshapes its projections by head counts kept as plain ints: pruning its
  inner Linear/Conv layers broke MaxViT's forward ("shape '[1, 16, 16, 8]' is invalid"). Those
  layers are protected; Torch-Pruning then leaves every group that reaches them (the residual
  stream) whole, and prunes the rest (MaxViT: the stem, MBConv expansions and the head).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from edgekit.modelcopy import forget_forward_caches

_FEED_FORWARD = re.compile(r"mlp|ffn|feed_?forward", re.IGNORECASE)  # class names of transformer MLPs


@dataclasses.dataclass
class AttentionPlan:
    round_to: int | None       # channel multiple that keeps heads equal (combined with the user's)
    protected: list[Any]       # layers whose outputs must keep their width
    kind: str | None           # "multi-head", "windowed", "opaque" or None: for the report


def plan_for(model: Any) -> AttentionPlan:
    import torch

    heads = [m.num_heads for m in model.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if _has_windowed_attention(model):
        hidden = _mlp_hidden_layers(model)
        protected = [m for m in model.modules()
                     if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m not in hidden]
        return AttentionPlan(None, protected, "windowed")
    opaque = _opaque_attention_layers(model)
    if heads:
        return AttentionPlan(math.lcm(*heads), opaque, "multi-head")
    if opaque:
        return AttentionPlan(None, opaque, "opaque")
    return AttentionPlan(None, [], None)


def combined_round_to(user: int | None, plan: AttentionPlan) -> int | None:
    if plan.round_to is None:
        return user
    return math.lcm(user or 1, plan.round_to)


def after_pruning(model: Any) -> None:
    """Bring plain-int widths that forward() reads back in line with the pruned tensors, and drop
    what a forward cached from the unpruned parameters (timm's attention-bias caches)."""
    forget_forward_caches(model)
    conv_proj = getattr(model, "conv_proj", None)
    if conv_proj is not None and hasattr(model, "hidden_dim"):  # torchvision VisionTransformer
        model.hidden_dim = conv_proj.out_channels


def _has_windowed_attention(model: Any) -> bool:
    return any("WindowAttention" in type(m).__name__ for m in _submodules(model))


def _submodules(model: Any) -> list[Any]:
    """Every module but the model itself: a whole network named ``...Attention...`` (a user's
    ``AttentionUNet``) is not an attention block, and taking it for one protected every layer."""
    return [m for m in model.modules() if m is not model]


def _opaque_attention_layers(model: Any) -> list[Any]:
    """Linear/Conv layers inside attention modules other than ``nn.MultiheadAttention``."""
    import torch

    found: list[Any] = []
    for module in _submodules(model):
        if "Attention" in type(module).__name__ and not isinstance(module, torch.nn.MultiheadAttention):
            found += [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m not in found]
    return found


def _mlp_hidden_layers(model: Any) -> set[Any]:
    """The first layer of every transformer feed-forward block: a module whose class is named like one
    (torchvision's ``MLP``/``MLPBlock``, timm's ``Mlp``, ``ConvMlp``, ``GluMlp``, ``*FFN*``,
    ``FeedForward``) holding 2-4 Linear or ungrouped Conv2d layers, the first of which widens to what
    the last reads. Matching only torchvision's ``block.mlp`` Sequential left timm's Swin and
    EfficientViT-M0 (``ConvMlp``) with nothing to prune: 0% of their MACs."""
    import torch

    found = set()
    for module in model.modules():
        if module is model or not _FEED_FORWARD.search(type(module).__name__):
            continue
        dense = [m for m in module.modules() if isinstance(m, torch.nn.Linear)
                 or (isinstance(m, torch.nn.Conv2d) and m.groups == 1)]
        if 2 <= len(dense) <= 4 and _width(dense[0], out=True) == _width(dense[-1], out=False):
            found.add(dense[0])
    return found


def _width(layer: Any, out: bool) -> int:
    import torch

    if isinstance(layer, torch.nn.Linear):
        return layer.out_features if out else layer.in_features
    return layer.out_channels if out else layer.in_channels
