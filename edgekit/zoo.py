"""Small built-in architectures for the demo and the tests (no downloads, trained in seconds).

All are ordinary ``torch.nn.Module`` classes importable by name, so models saved with
``torch.save(model)`` load anywhere edgekit is installed (``edgekit.zoo:digits_cnn`` is also a
valid model source).
"""
from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity shortcut: gives structured pruning a coupled channel group."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(channels, channels)
        self.conv2 = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.conv2(self.conv1(x)))


class DigitsCNN(nn.Module):
    """A small residual CNN for 3x32x32 inputs (the ``digits`` recipe); ~0.5 M parameters at width 32."""

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            ResidualBlock(width),
            nn.MaxPool2d(2),  # 16x16
            _conv_bn_relu(width, 2 * width),
            ResidualBlock(2 * width),
            nn.MaxPool2d(2),  # 8x8
            _conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_cnn(num_classes: int = 10, width: int = 32) -> DigitsCNN:
    """Factory for ``edgekit.zoo:digits_cnn``."""
    return DigitsCNN(num_classes=num_classes, width=width)


def resnet18_small(num_classes: int = 10) -> nn.Module:
    """torchvision's ResNet-18 with a stem for small (32x32) inputs: stride-2 3x3 conv, no max-pool."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


class DigitsDetector(nn.Module):
    """An anchor-free single-stride (8 px) detector for 1x64x64 canvases (``builtin:digits-detect``),
    ~0.2 M parameters at width 32. Its output is decoded in the graph in the Ultralytics YOLOv8/11
    layout ``[N, 4 + classes, anchors]`` (boxes cx,cy,w,h in input pixels, then sigmoid class
    scores), so edgekit scores it, and INT8 treats its head, exactly like an Ultralytics export."""

    STRIDE = 8

    def __init__(self, num_classes: int = 10, width: int = 32, in_channels: int = 1, input_size: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width // 2, stride=2),  # 32x32
            _conv_bn_relu(width // 2, width, stride=2),  # 16x16
            ResidualBlock(width),
            _conv_bn_relu(width, 2 * width, stride=2),  # 8x8
            ResidualBlock(2 * width),
        )
        self.box_branch = nn.Sequential(_conv_bn_relu(2 * width, 2 * width), nn.Conv2d(2 * width, 4, 1))
        self.class_branch = nn.Sequential(_conv_bn_relu(2 * width, 2 * width), nn.Conv2d(2 * width, num_classes, 1))
        nn.init.constant_(self.class_branch[-1].bias, -4.6)  # a 1% prior: early training is not swamped by negatives
        cells = -(-input_size // self.STRIDE)
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        centres = torch.stack([xs.flatten() + 0.5, ys.flatten() + 0.5]) * self.STRIDE  # [2, A]
        self.register_buffer("anchor_centres", centres.float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        distances = nn.functional.softplus(self.box_branch(features).flatten(2)) * self.STRIDE  # l,t,r,b [N,4,A]
        left_top, right_bottom = distances[:, :2], distances[:, 2:]
        centre = self.anchor_centres + (right_bottom - left_top) / 2
        size = left_top + right_bottom
        scores = torch.sigmoid(self.class_branch(features).flatten(2))
        return torch.cat([centre, size, scores], 1)


class DigitsSegmenter(nn.Module):
    """A small U-Net for 1x64x64 canvases (``builtin:digits-seg``): a stride-2 stem, two more
    levels down to 8x8 (the receptive field must see a whole digit to name its pixels), two skip
    levels back up with nearest upsampling, scores at 32x32 upsampled to ``[N, classes, 64, 64]``;
    ~0.1 M parameters at width 16."""

    def __init__(self, num_classes: int = 11, width: int = 16, in_channels: int = 1) -> None:
        super().__init__()
        self.stem = _conv_bn_relu(in_channels, width, stride=2)  # 32x32
        self.level2 = nn.Sequential(_conv_bn_relu(width, 2 * width, stride=2), ResidualBlock(2 * width))  # 16x16
        self.level3 = nn.Sequential(_conv_bn_relu(2 * width, 4 * width, stride=2), ResidualBlock(4 * width))  # 8x8
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decode2 = _conv_bn_relu(4 * width + 2 * width, 2 * width)
        self.decode1 = _conv_bn_relu(2 * width + width, width)
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.to_input_size = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.stem(x)
        second = self.level2(first)
        third = self.level3(second)
        up2 = self.decode2(torch.cat([self.up(third), second], 1))
        up1 = self.decode1(torch.cat([self.up(up2), first], 1))
        return self.to_input_size(self.classifier(up1))


def digits_detector(num_classes: int = 10, width: int = 32) -> DigitsDetector:
    """Factory for ``edgekit.zoo:digits_detector``."""
    return DigitsDetector(num_classes=num_classes, width=width)


def digits_segmenter(num_classes: int = 11, width: int = 16) -> DigitsSegmenter:
    """Factory for ``edgekit.zoo:digits_segmenter``."""
    return DigitsSegmenter(num_classes=num_classes, width=width)
