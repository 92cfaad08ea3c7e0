"""Operations Torch-Pruning 1.6 maps wrongly between coupled layers: pruning protects the layers
around them and prunes the rest, where it used to end in a traceback (pixel_shuffle, a chunk
concatenated back in another order) or refuse the whole model (the others)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from edgekit.export import export_onnx
from edgekit.prune import prune

MIXERS: dict[str, tuple[int, int, Callable[[torch.Tensor], torch.Tensor]]] = {
    # name: (channels into the mixer, channels out of it, the operation)
    "pixel_shuffle": (16, 4, lambda y: F.pixel_shuffle(y, 2)),
    "pixel_unshuffle": (4, 16, lambda y: F.pixel_unshuffle(y, 2)),
    "chunk_concat_swapped": (8, 8, lambda y: torch.cat(y.chunk(2, 1)[::-1], 1)),
    "uneven_split_concat": (8, 8, lambda y: torch.cat(torch.split(y, [3, 5], 1)[::-1], 1)),
    "index_select": (8, 8, lambda y: y.index_select(1, torch.arange(7, -1, -1))),
    "grouped_view_sum": (8, 8, lambda y: y.view(y.shape[0], 2, 4, *y.shape[2:]).sum(1).repeat(1, 2, 1, 1)),
    # fine while one channel goes, broken once the width falls below what they read: probed at pruning's ratio
    "narrow": (8, 4, lambda y: y.narrow(1, 2, 4)),
    # mapped right for a contiguous tail of channels, wrong for the scattered ones pruning picks
    "strided_slice": (8, 4, lambda y: y[:, ::2]),
}


class Mixed(torch.nn.Module):
    """A stem, the operation, and a prunable block after it (which must still narrow)."""

    def __init__(self, mixer: str) -> None:
        super().__init__()
        into, out, self.mix = MIXERS[mixer]
        self.stem = torch.nn.Conv2d(3, into, 3, padding=1)
        self.mixed = torch.nn.Conv2d(out, 16, 3, padding=1)
        self.wide = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.narrow = torch.nn.Conv2d(32, 16, 1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.mixed(self.mix(self.stem(x))))
        y = self.narrow(torch.relu(self.wide(y)))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("mixer", sorted(MIXERS))
def test_layers_around_an_unmappable_operation_keep_their_widths_and_the_rest_prunes(mixer: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Mixed(mixer).eval()
    example = torch.randn(1, 3, 16, 16)
    report = prune(model, example, ratio=0.5, round_to=None, progress=None)
    assert report["unmapped_protected"] == ["stem"], report["unmapped_protected"]
    assert model.stem.out_channels == MIXERS[mixer][0]
    assert model.wide.out_channels == 16  # the block after the operation was pruned
    assert report["macs_after"] < 0.8 * report["macs_before"]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert export_onnx(model, example, tmp_path / "m.onnx").parity.passed


class C2f(torch.nn.Module):
    """YOLOv8's C2f as a user writes it: the 1x1 conv's output chunked in two, the second half through
    a bottleneck, all three concatenated (Torch-Pruning raised IndexError in its importance step)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = torch.nn.Conv2d(c, c, 1)
        self.m = torch.nn.Conv2d(c // 2, c // 2, 3, padding=1)
        self.cv2 = torch.nn.Conv2d(3 * (c // 2), c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class TinyDetectorBackbone(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.c2f = C2f(32)
        self.down = torch.nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.down(self.c2f(self.stem(x))).mean((2, 3)))


def test_a_c2f_block_written_by_hand_prunes_around_its_chunk(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TinyDetectorBackbone().eval()
    example = torch.randn(1, 3, 16, 16)
    report = prune(model, example, ratio=0.5, progress=None)
    assert report["unmapped_protected"] == ["c2f.m"]
    assert model.down.out_channels == 32 and report["macs_after"] < 0.8 * report["macs_before"]
    assert export_onnx(model, example, tmp_path / "m.onnx").parity.passed


def test_a_failure_of_recovery_between_steps_is_raised_as_itself_not_probed() -> None:
    """An error of the training between pruning steps (out of memory, bad data) is not pruning's: it
    comes out unchanged, without a restore and a probe of every group."""
    from edgekit.prune.structured import prune_model
    from edgekit.prune.report import PruneSettings

    torch.manual_seed(0)
    model = Mixed("index_select").eval()
    calls: list[int] = []

    def recovery(_model: torch.nn.Module, step: int) -> None:
        calls.append(step)
        raise RuntimeError("CUDA out of memory (as recovery training would raise it)")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        prune_model(model, torch.randn(1, 3, 16, 16), PruneSettings(ratio=0.5, round_to=None, steps=2, protect=("stem",)),
                    between_steps=recovery, progress=None)
    assert calls == [1]


class DepthwiseMultiplier(torch.nn.Module):
    """FastViT's shape: a residual stream read by a depthwise convolution with a channel multiplier
    (groups = input channels, twice as many outputs), which Torch-Pruning's importance cannot index."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.block = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 16, 1))
        self.expand = torch.nn.Conv2d(16, 32, 3, padding=1, groups=16)
        self.head = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 1), torch.nn.ReLU(), torch.nn.Conv2d(32, 24, 1))
        self.fc = torch.nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y + self.block(y)
        return self.fc(self.head(torch.relu(self.expand(y))).mean((2, 3)))


def test_a_depthwise_convolution_with_a_channel_multiplier_keeps_its_input_width_and_the_rest_prunes(
        tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DepthwiseMultiplier().eval()
    example = torch.randn(1, 3, 16, 16)
    report = prune(model, example, ratio=0.5, round_to=None, progress=None)
    assert model.stem.out_channels == 16 and model.expand.in_channels == 16  # the stream it reads keeps its width
    assert model.block[0].out_channels < 32 and model.head[0].out_channels < 32  # the rest was pruned
    assert report["unmapped_protected"], report
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert export_onnx(model, example, tmp_path / "m.onnx").parity.passed


class CachedBias(torch.nn.Module):
    """timm's LeViT/EfficientViT-M attention-bias cache: filled by an eval-mode forward from a parameter
    (with autograd history when gradients are on), emptied by ``train()``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        self.biases = torch.nn.Parameter(torch.randn(channels))
        self.bias_cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "CachedBias":
        super().train(mode)
        if mode:
            self.bias_cache = {}
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            bias = self.biases * 1.0
        else:
            bias = self.bias_cache.setdefault(str(x.device), self.biases * 1.0)
        return self.conv(x) + bias[:, None, None]


def test_a_model_that_caches_tensors_from_its_parameters_in_forward_prunes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), CachedBias(32), torch.nn.ReLU(),
                                torch.nn.Conv2d(32, 16, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(16, 10)).eval()
    example = torch.randn(1, 3, 16, 16)
    with torch.enable_grad():
        model(example)  # the cache now holds a tensor with autograd history, as after edgekit's head search
    report = prune(model, example, ratio=0.5, round_to=None, progress=None)
    assert model[0].out_channels < 32 and report["macs_after"] < report["macs_before"]
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)  # the cache of the unpruned width was dropped


class SingleHeadAttention(torch.nn.Module):
    """timm SHViT's: attention on a split-off part of the channels, flattened, concatenated back."""
    def __init__(self, dim: int, qk_dim: int, pdim: int) -> None:
        super().__init__()
        self.pdim, self.dim, self.qk_dim = pdim, dim, qk_dim
        self.pre_norm = torch.nn.GroupNorm(1, pdim)
        self.qkv = torch.nn.Conv2d(pdim, qk_dim * 2 + pdim, 1)
        self.proj = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Conv2d(dim, dim, 1))
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x1, x2 = torch.split(x, [self.pdim, self.dim - self.pdim], dim=1)
        q, k, v = self.qkv(self.pre_norm(x1)).split([self.qk_dim, self.qk_dim, self.pdim], dim=1)
        q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
        attn = ((q.transpose(-1, -2) @ k) * self.qk_dim ** -0.5).softmax(dim=-1)
        x1 = (v @ attn.transpose(-1, -2)).reshape(B, self.pdim, H, W)
        return self.proj(torch.cat([x1, x2], dim=1))

class SingleHeadAttentionNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 32, 3, 2, 1)
        self.mixer = SingleHeadAttention(32, 8, 8)
        self.ffn = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 1), torch.nn.ReLU(), torch.nn.Conv2d(64, 32, 1))
        self.fc = torch.nn.Linear(32, 10)
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.mixer(x)
        x = x + self.ffn(x)
        return self.fc(x.mean((2, 3)))


def test_a_model_whose_reshape_width_torch_pruning_infers_as_zero_prunes_the_rest(tmp_path: Path) -> None:
    """SHViT-S1 failed to build Torch-Pruning's graph (ZeroDivisionError in update_reshape_index_mapping)."""
    torch.manual_seed(0)
    model = SingleHeadAttentionNet().eval()
    example = torch.randn(1, 3, 16, 16)
    report = prune(model, example, ratio=0.5, round_to=None, progress=None)
    assert model.ffn[0].out_channels < 64 and report["macs_after"] < 0.8 * report["macs_before"]
    assert export_onnx(model, example, tmp_path / "m.onnx").parity.passed
