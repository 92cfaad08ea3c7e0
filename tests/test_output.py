"""What a user sees: edgekit's own lines (and progress bars on a terminal) unless -v; -q keeps
only warnings and errors. TensorFlow, absl and XLA write from C++ to file descriptor 2, so these
run as real processes with their real descriptors."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

# what TensorFlow/absl/XLA/oneDNN print: "E0000 00:00:...", "2026-... I tensorflow/...", "WARNING: All log ..."
FOREIGN = re.compile(r"^[EWIF]\d{4} |tensorflow|absl|cuda|oneDNN|XNNPACK|WARNING: All log messages", re.I)


def edgekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


def tflite_quantize(model: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return edgekit("quantize", str(model), "--backend", "tflite", "--calib", "builtin:digits/train", "--recipe",
                   "digits", "--num-samples", "16", "--no-fp32", "--force", "-o", str(out), *flags, cwd=out.parent)


@pytest.mark.slow
def test_tflite_conversion_prints_only_edgekit_lines_unless_verbose(digits_fp32_onnx: Path, tmp_path: Path) -> None:
    plain = tflite_quantize(digits_fp32_onnx, tmp_path / "m.int8.tflite")
    assert plain.returncode == 0, plain.stderr
    lines = (plain.stdout + plain.stderr).strip().splitlines()
    foreign = [line for line in lines if FOREIGN.search(line) and "TFLite full-integer" not in line]
    assert not foreign, foreign
    assert plain.stderr.strip() == ""  # no progress bars either: stderr is not a terminal here
    assert any(line.startswith("wrote ") for line in lines) and len(lines) <= 8, lines
    verbose = tflite_quantize(digits_fp32_onnx, tmp_path / "m.int8.tflite", "-v")
    assert verbose.returncode == 0, verbose.stderr
    extra = [line for line in (verbose.stdout + verbose.stderr).splitlines() if FOREIGN.search(line)]
    assert extra, "with -v the libraries' own lines show"


def test_quiet_prints_nothing_but_the_product(digits_fp32_onnx: Path, tmp_path: Path) -> None:
    done = edgekit("quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", "builtin:digits/train",
                   "--recipe", "digits", "--num-samples", "16", "-o", str(tmp_path / "m.int8.onnx"), "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    # -q keeps warnings: on a CPU without VNNI this INT8 model is slower than FP32, and that is said
    assert all(line.startswith("warning: INT8 runs at ") for line in done.stderr.splitlines()), done.stderr
    assert (tmp_path / "m.int8.onnx").is_file()
    loud = edgekit("-v", "inspect", str(tmp_path / "m.int8.onnx"), cwd=tmp_path)  # -v before the command works too
    assert loud.returncode == 0 and "QuantizeLinear" in loud.stdout


LAYER_SCALED = '''
import torch


class LayerScaled(torch.nn.Module):
    """A residual block with a layer-scale parameter outside any layer (FastViT, ConvNeXt, CaiT):
    Torch-Pruning warns "Unwrapped parameters detected" from its own module."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.gamma = torch.nn.Parameter(torch.full((16, 1, 1), 0.5))
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.gamma * self.conv(y)
        return self.fc(y.mean((2, 3)))


def build():
    return LayerScaled()
'''


def test_prune_prints_only_edgekit_lines_unless_verbose(tmp_path: Path) -> None:
    (tmp_path / "layer_scaled.py").write_text(LAYER_SCALED)
    args = ("prune", "layer_scaled.py:build", "--input-shape", "1,3,16,16", "--ratio", "0.5", "-o", "p.pt", "--force")
    plain = edgekit(*args, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "Unwrapped parameters" not in plain.stdout + plain.stderr and "warn" not in plain.stderr, plain.stderr
    verbose = edgekit(*args, "-v", cwd=tmp_path)
    assert "Unwrapped parameters" in verbose.stdout + verbose.stderr  # the library's own words, on request
