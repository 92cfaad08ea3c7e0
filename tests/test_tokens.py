"""A transformer's image-independent tokens (class and distillation tokens) through INT8, both backends:
kept out of the shared int8 scale of the first LayerNorm's input and scaled up in the residual stream
(edgekit.quantize.onnx_tokens, edgekit.quantize.onnx_token_scales). The rewritten graph must compute
what the exported one does, and each INT8 model must keep the tokens the head reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekit.quantize.tflite.onnx_rewrites import prepare_for_onnx2tf


class _Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(width, eps=1e-6), torch.nn.LayerNorm(width, eps=1e-6)
        self.attention = torch.nn.MultiheadAttention(width, 2, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(), torch.nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _TwoTokenViT(torch.nn.Module):
    """DeiT's layout: a class and a distillation token before the patches, a positional embedding, pre-norm
    blocks, a head on both tokens; plus a pooled read of the embeddings (a reader of the residual stream that
    is neither a LayerNorm nor the residual Add)."""

    def __init__(self, width: int = 48, patch: int = 4, size: int = 32) -> None:
        super().__init__()
        self.patches = torch.nn.Conv2d(3, width, patch, stride=patch)
        self.tokens = torch.nn.Parameter(torch.zeros(1, 2, width))
        tokens = 2 + (size // patch) ** 2
        self.position = torch.nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.blocks = torch.nn.ModuleList([_Block(width), _Block(width)])
        self.norm = torch.nn.LayerNorm(width, eps=1e-6)
        self.head = torch.nn.Linear(width, 10)
        self.side = torch.nn.Linear(width, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.patches(image).flatten(2).transpose(1, 2)
        x = torch.cat([self.tokens.expand(x.shape[0], -1, -1), x], dim=1) + self.position
        pooled = self.side(x.mean(dim=1))
        x = self.norm(self.blocks[1](self.blocks[0](x)))
        return self.head((x[:, 0] + x[:, 1]) / 2) + 0.01 * pooled


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from edgekit.data import calibration_tensors

    digits = calibration_tensors("builtin:digits/train", "digits", 48, seed=0, progress=False)
    return torch.nn.functional.interpolate(torch.from_numpy(digits), size=(32, 32), mode="bilinear").numpy()


@pytest.fixture(scope="module")
def two_token_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = _TwoTokenViT().eval()
    path = tmp_path_factory.mktemp("tokens") / "two_tokens.onnx"
    torch.onnx.export(model, torch.zeros(1, 3, 32, 32), path, input_names=["input"], opset_version=17, dynamo=False)
    return path


def _run(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": image[None]})[0] for image in images])


def test_the_rewritten_graph_computes_what_the_exported_one_does(two_token_onnx: Path, images: np.ndarray,
                                                                  tmp_path: Path) -> None:
    prepared = tmp_path / "prepared.onnx"
    prepare_for_onnx2tf(two_token_onnx, prepared, calibration=images[:16])
    graph = onnx.load(str(prepared)).graph
    constants = {i.name for i in graph.initializer}
    writers = {out: node for node in graph.node for out in node.output}
    for norm in (n for n in graph.node if n.op_type == "LayerNormalization"):
        writer = writers.get(norm.input[0])
        assert writer is None or writer.op_type != "Concat" or not set(writer.input) & constants, norm.name
    scales = [n for n in graph.node if n.op_type == "Mul" and n.name.endswith("_token_scale")]
    assert scales, "the tokens' rows were not scaled in the residual stream"
    assert any("token_unscale" in n.name for n in graph.node), "the pooled read of a scaled tensor must be unscaled"
    want, got = _run(two_token_onnx, images[16:]), _run(prepared, images[16:])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())


def test_image_independent_tokens_keep_their_fidelity_in_full_integer_tflite(two_token_onnx: Path,
                                                                             images: np.ndarray, tmp_path: Path) -> None:
    from edgekit.quantize.tflite import quantize_tflite

    result = quantize_tflite(two_token_onnx, tmp_path / "two_tokens.int8.tflite", images[:32], holdout=images[32:],
                             write_fp32=False, progress=False)
    assert result.full_integer
    # measured 0.9987; without the stream's row scales 0.9960, without either rewrite 0.9924
    assert result.fidelity is not None and result.fidelity.cosine >= 0.998, result.fidelity


def test_image_independent_tokens_keep_their_fidelity_in_onnx_runtime_int8(two_token_onnx: Path, images: np.ndarray,
                                                                           tmp_path: Path) -> None:
    from edgekit.quantize.ort import quantize_ort_workflow

    result = quantize_ort_workflow(two_token_onnx, tmp_path / "two_tokens.int8.onnx", images[:32], holdout=images[32:],
                                   remedies=False, progress=False, log=lambda _: None)
    # measured 0.9981 (every op INT8, MinMax, no remedy); without the token rewrites 0.9867
    assert result.fidelity is not None and result.fidelity.cosine >= 0.996, result.fidelity
