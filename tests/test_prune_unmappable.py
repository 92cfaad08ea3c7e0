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
