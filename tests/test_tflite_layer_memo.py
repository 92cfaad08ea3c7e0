"""onnx2tf's strict-mode checks re-run the Keras model built so far once per checked op; with each
layer's output cached per sample (edgekit.quantize.tflite.layer_memo) the conversion is the same,
byte for byte, and most layer calls are served from the cache. Real onnx2tf, converter, interpreter."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _convnext_like(path: Path) -> Path:
    """Three ConvNeXt blocks: their layer-scale Mul and residual Add are what onnx2tf checks."""
    import torch

    from edgekit.export import export_onnx

    class Block(torch.nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.dw = torch.nn.Conv2d(width, width, 7, padding=3, groups=width)
            self.norm = torch.nn.LayerNorm(width)
            self.fc1, self.fc2 = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)
            self.gamma = torch.nn.Parameter(torch.rand(width) + 0.5)

        def forward(self, x):
            y = self.fc2(torch.relu(self.fc1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
            return x + (self.gamma * y).permute(0, 3, 1, 2)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 4, stride=4), *[Block(16) for _ in range(3)],
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    export_onnx(model.eval(), torch.zeros(1, 3, 32, 32), path)
    return path


CONVERT = """
import contextlib, json, sys
import numpy as np
import edgekit.quantize.tflite.keras_build as keras_build
from edgekit.quantize.tflite import quantize_tflite
from edgekit.quantize.tflite.layer_memo import layer_outputs_reused

counts = []

@contextlib.contextmanager
def recording():
    with layer_outputs_reused() as seen:
        yield seen
    counts.append(dict(seen))

keras_build.layer_outputs_reused = recording if sys.argv[3] == "cached" else contextlib.nullcontext
calib = np.random.default_rng(0).random((16, 3, 32, 32), dtype=np.float32)
quantize_tflite(sys.argv[1], sys.argv[2], calib, progress=False)
print(json.dumps(counts))
"""


def _convert(onnx_path: Path, out: Path, mode: str) -> list[dict[str, int]]:
    """One conversion in a fresh process: the cache lives in the process, so each variant starts without
    one (Keras's per-process layer numbering, which once made two conversions in one process differ, is
    reset by build_keras itself)."""
    done = subprocess.run([sys.executable, "-c", CONVERT, str(onnx_path), str(out), mode], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cached_layer_outputs_give_the_same_conversion_with_fewer_layer_calls(tmp_path: Path) -> None:
    onnx_path = _convnext_like(tmp_path / "blocks.onnx")
    counts = _convert(onnx_path, tmp_path / "cached.tflite", "cached")
    assert _convert(onnx_path, tmp_path / "uncached.tflite", "uncached") == []

    for suffix in (".tflite", ".fp32.tflite"):  # the INT8 model and the FP32 one it is checked against
        assert (tmp_path / f"cached{suffix}").read_bytes() == (tmp_path / f"uncached{suffix}").read_bytes()
    assert len(counts) == 1 and counts[0]["computed"] > 0
    # each check re-ran every earlier layer: most calls are now served from the cache
    assert counts[0]["reused"] > 2 * counts[0]["computed"], counts
