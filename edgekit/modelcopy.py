"""Copies of a user's model that survive what its forward left behind.

Some models cache tensors computed from their parameters during an eval-mode forward: timm's
LeViT, EfficientViT (MSRA), EfficientFormer and TinyViT keep ``attention_bias_cache``, the
attention biases gathered for the input's resolution. A forward with gradients enabled (edgekit's
head-layer walk does one) leaves tensors with autograd history there, and ``copy.deepcopy`` refuses
them ("Only Tensors created explicitly by the user (graph leaves) support the deepcopy protocol"):
EfficientViT-M0's pruning failed on its first copy. The cache is also stale once pruning has changed
the parameters it was gathered from.
"""
from __future__ import annotations

import copy
from typing import Any

_MODULE_STATE = ("_parameters", "_buffers", "_modules")


def forget_forward_caches(model: Any) -> None:
    """Clear what a forward cached on ``model``'s modules, keeping its train/eval mode: first by the
    model's own rule (timm's ``train()`` empties its attention-bias caches), then any tensor still
    carrying autograd history in a module attribute (or a dict of them) is detached."""
    import torch

    was_training = model.training
    model.train(True)
    model.train(was_training)
    for module in model.modules():
        for key, value in list(vars(module).items()):
            if key in _MODULE_STATE:
                continue
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, key, value.detach())
            elif isinstance(value, dict) and any(isinstance(v, torch.Tensor) and v.grad_fn is not None
                                                 for v in value.values()):
                setattr(module, key, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in value.items()})


def copy_model(model: Any) -> Any:
    """``copy.deepcopy(model)`` after :func:`forget_forward_caches`."""
    forget_forward_caches(model)
    return copy.deepcopy(model)
