"""Small built-in architectures for the demo and the tests (no downloads, trained in seconds).

Both are ordinary ``torch.nn.Module`` classes importable by name, so models saved with
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
