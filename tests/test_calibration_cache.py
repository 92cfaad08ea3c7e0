"""A search calibrates once per calibration setting, and its models are the ones fresh calibrations give.

Real ONNX Runtime quantization of a Conv/ReLU net: ORT's quantizer adjusts the ranges it is handed
(a quantized ReLU's input takes its output's range), so a cache that shared one ranges object between
quantizations with different layers in float would write different models from the second on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgekit.quantize.ort.calibration_cache import CalibrationCache
from edgekit.quantize.ort.quantizer import calibration_feed, preprocess, quantize_prepared
from edgekit.quantize.ort.settings import OrtQuantSettings


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from edgekit.export import export_onnx

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 4))
    work = tmp_path_factory.mktemp("cache")
    export_onnx(net.eval(), torch.zeros(1, 3, 24, 24), work / "m.onnx")
    return preprocess(work / "m.onnx", work)


def _bytes(path: Path) -> bytes:
    return onnx.load(str(path)).SerializeToString()


@pytest.mark.parametrize("method", ["MinMax", "Entropy"])
def test_layers_in_float_reuse_the_calibration_and_write_what_fresh_calibrations_write(
        prepared: Path, tmp_path: Path, method: str) -> None:
    model = onnx.load(str(prepared))
    relu = next(n.name for n in model.graph.node if n.op_type == "Relu")
    feed = calibration_feed(model, np.random.default_rng(0).standard_normal((12, 3, 24, 24)).astype(np.float32), "m")
    settings = OrtQuantSettings(calibrate_method=method, per_channel=True)
    order = [[], [relu], []]  # the first quantization's ReLU adjustment must not reach the second
    fresh = [_bytes(quantize_prepared(prepared, tmp_path / f"fresh{i}.onnx", feed, settings, nodes))
             for i, nodes in enumerate(order)]
    assert fresh[0] != fresh[1]  # keeping the ReLU in float changes the model

    cache = CalibrationCache()
    cached = [_bytes(quantize_prepared(prepared, tmp_path / f"cached{i}.onnx", feed, settings, nodes, cache=cache))
              for i, nodes in enumerate(order)]
    assert cache.hits == 2
    assert cached == fresh

    other = OrtQuantSettings(calibrate_method="Percentile" if method != "Percentile" else "MinMax", per_channel=True)
    quantize_prepared(prepared, tmp_path / "other.onnx", feed, other, [], cache=cache)
    fewer = calibration_feed(model, feed.tensors[:6], "m")
    quantize_prepared(prepared, tmp_path / "fewer.onnx", fewer, settings, [], cache=cache)
    assert cache.hits == 2  # another method or other samples calibrate afresh
