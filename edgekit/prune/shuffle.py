"""ShuffleNet's channel shuffle, made prunable.

torch-pruning 1.6 cannot map channel indices through the shuffle's view/transpose/view (its
index mapping divides by zero while building the graph). During pruning the shuffle is swapped
for one opaque autograd op, and every channel that crosses a block boundary (the shuffle's input
and output) is protected, so only the channels *inside* each block's branches are pruned: the
permutation never has to be mapped. The original function is restored afterwards, so the pruned
model and its export are plain torchvision code.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


def _shuffle_function() -> Any:
    import torch

    class ChannelShuffle(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, groups: int) -> Any:  # type: ignore[override]
            ctx.groups = groups
            b, c, h, w = x.shape
            return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:  # type: ignore[override]
            b, c, h, w = grad.shape
            groups = ctx.groups
            return grad.view(b, c // groups, groups, h, w).transpose(1, 2).reshape(b, c, h, w), None

    return ChannelShuffle


def is_shufflenet(model: Any) -> bool:
    from torchvision.models.shufflenetv2 import InvertedResidual

    return any(isinstance(m, InvertedResidual) for m in model.modules())


def boundary_layers(model: Any) -> list[Any]:
    """Convolutions whose channels cross a shuffle: the stem and each branch's first and last conv
    on the block input/output side."""
    import torch
    from torchvision.models.shufflenetv2 import InvertedResidual

    layers = [m for m in getattr(model, "conv1", []) if isinstance(m, torch.nn.Conv2d)]
    for block in model.modules():
        if isinstance(block, InvertedResidual):
            for branch in (block.branch1, block.branch2):
                convs = [m for m in branch if isinstance(m, torch.nn.Conv2d)]
                if convs:
                    layers.append(convs[-1])  # writes the block output
                    if convs[0].groups > 1:  # branch1 starts with a depthwise conv on the block input
                        layers.append(convs[0])
    return layers


@contextlib.contextmanager
def opaque_shuffle() -> Iterator[None]:
    import torchvision.models.shufflenetv2 as shufflenet

    original = shufflenet.channel_shuffle
    op = _shuffle_function()
    shufflenet.channel_shuffle = lambda x, groups: op.apply(x, groups)
    try:
        yield
    finally:
        shufflenet.channel_shuffle = original
