"""TFLite's ``--quantize-ops compute``: a transformer whose full-integer INT8 loses fidelity in the many
tensors it rounds besides the weighted ops' inputs (LayerNorm's parts, residual Adds, Softmax, GELU)
keeps only Conv/FullyConnected/BatchMatMul in INT8, labelled as not full-integer.

Real conversions and TFLite interpreters on a 2-block ViT (torchvision's VisionTransformer, seeded
random weights, 32 px) with one high-norm patch token: full-integer 0.961, compute-only 0.993. Without
that token its full-integer INT8 is faithful (0.995) since the class token is kept apart from the
patch rows' scales (edgekit.quantize.onnx_tokens); before, it was the class token that full-integer lost.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.manifest import read_manifest
from edgekit.quantize import fidelity

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    import torch
    from torchvision.models.vision_transformer import VisionTransformer

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zeroes the head
    with torch.no_grad():  # one high-norm patch token, as trained ViTs grow (Darcet et al., "ViTs need registers"):
        model.encoder.pos_embedding[:, 5] = torch.randn(32) * 10  # its row sets LayerNorm's parts' int8 scales
    images = np.random.default_rng(0).normal(size=(32, 3, 32, 32)).astype(np.float32)
    path = tmp_path_factory.mktemp("vit") / "vit.onnx"
    export_onnx(model, torch.from_numpy(images[:1]), path, parity_count=0)  # parity is export's tests' concern
    return path, images


def test_compute_only_keeps_all_but_the_weighted_ops_in_float_and_says_so(
        tiny_vit: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    from edgekit.quantize.tflite import quantize_tflite
    from edgekit.quantize.tflite.interpreter import builtin_interpreter

    onnx_path, images = tiny_vit
    calib, held_out = images[:16], images[16:]
    options = {"holdout": held_out, "progress": False, "write_fp32": False, "remedies": False}
    full = quantize_tflite(onnx_path, tmp_path / "full.int8.tflite", calib, **options)
    assert full.full_integer and full.settings["quantize_ops"] == "all"
    assert full.fidelity.cosine < fidelity.MIN_COSINE and any("--quantize-ops compute" in w for w in full.warnings)
    out = tmp_path / "compute.int8.tflite"
    compute = quantize_tflite(onnx_path, out, calib, quantize_ops="compute", **options)
    assert compute.fidelity.cosine > full.fidelity.cosine + 0.03, (full.fidelity, compute.fidelity)
    assert compute.settings["quantize_ops"] == "compute" and not compute.full_integer
    assert {"ADD", "MEAN", "SOFTMAX", "GELU"} <= set(compute.float_ops)
    assert compute.label.startswith("TFLite INT8 Conv/FullyConnected/BatchMatMul only (not full-integer: ")
    stage = next(s for s in read_manifest(out)["stages"] if s["stage"] == "quantize")
    assert stage["label"] == compute.label and stage["quantize_ops"] == "compute"
    assert fidelity.measure(onnx_path, out, held_out).cosine == pytest.approx(compute.fidelity.cosine, abs=1e-6)
    # the weighted ops still compute in INT8: their weights are int8 in the written model
    interpreter = builtin_interpreter(out.read_bytes())
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    weighted = [op for op in interpreter._get_ops_details() if op["op_name"] == "FULLY_CONNECTED"]
    assert weighted and all(dtypes[op["inputs"][1]] == np.int8 for op in weighted)


def test_an_unknown_scope_is_one_line(tiny_vit: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    from edgekit.errors import EdgekitError
    from edgekit.quantize.tflite import quantize_tflite

    onnx_path, images = tiny_vit
    with pytest.raises(EdgekitError, match="--quantize-ops: 'weights' is not one of all, compute"):
        quantize_tflite(onnx_path, tmp_path / "x.int8.tflite", images, quantize_ops="weights")
    assert not list(tmp_path.iterdir())
