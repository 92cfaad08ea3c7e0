"""torchvision's single-stage detectors and segmenters as model sources, and models with several
outputs through export (parity per output) and both INT8 quantizers.

The detector adapters are checked against torchvision itself: its eval-mode output (transform
bypassed) against the adapter's dense output decoded and suppressed on the host by
:func:`edgekit.tasks.boxes.decode` with torchvision's thresholds. Random weights score every class
of an anchor alike, so a hook on the head makes each anchor's class decision unambiguous (one class
per anchor, logits spread, no ties): torchvision scores every (anchor, class) pair, the host the best
class per anchor, and the hook makes those the same candidates. Both paths run the same hooked head.

The resnet50-FPN, VGG and resnet101 models are ``slow``; the per-model figures are measured by
``benchmarks/bench_torchvision_tasks.py``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from edgekit.errors import EdgekitError, ParityError
from edgekit.export import export_onnx, prove_parity
from edgekit.sources import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_torchvision_tasks import canvases as digit_images, set_batchnorm  # noqa: E402 - one copy, the benchmark's

EDGEKIT = [sys.executable, "-m", "edgekit"]
RESNET = pytest.mark.heavy  # minutes each on 2 cores: `make test-heavy`, not `make test`


# -- the adapters against torchvision ------------------------------------------------------------------

class _NoTransform(torch.nn.Module):
    """torchvision's GeneralizedRCNNTransform without resizing or normalising (the adapters skip it)."""

    def forward(self, images: list[torch.Tensor], targets: Any = None) -> tuple[Any, Any]:
        from torchvision.models.detection.image_list import ImageList

        batch = torch.stack(images)
        return ImageList(batch, [tuple(batch.shape[-2:])] * len(batch)), targets

    def postprocess(self, result: Any, image_shapes: Any, original_sizes: Any) -> Any:
        return result


def _one_class_per_anchor(module: torch.nn.Module, args: Any, out: Any) -> Any:
    """Head hook: class logits standardised plus seeded noise (no ties), every class but the anchor's
    best set to -1e4 (SSD: its background column kept, it is what softmax weighs the class against)."""
    if not isinstance(out, dict):
        return out
    logits = out["cls_logits"]
    noise = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0), dtype=logits.dtype)
    logits = (logits - logits.mean()) / logits.std() + noise
    first = 1 if type(module).__name__.startswith("SSD") else 0
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, logits[..., first:].argmax(-1, keepdim=True) + first,
                                                               True)
    keep[..., 0] |= bool(first)
    out["cls_logits"] = torch.where(keep, logits, torch.full_like(logits, -1e4))
    return out


DETECTORS = [
    pytest.param("ssdlite320_mobilenet_v3_large", 160, id="ssdlite320"),
    pytest.param("retinanet_resnet50_fpn", 64, id="retinanet"),
    pytest.param("fcos_resnet50_fpn", 64, id="fcos"),
    pytest.param("retinanet_resnet50_fpn_v2", 64, id="retinanet_v2", marks=RESNET),
    pytest.param("ssd300_vgg16", 300, id="ssd300", marks=RESNET),
]


@pytest.mark.parametrize("name,size", DETECTORS)
def test_adapter_decodes_as_torchvision_postprocesses(name: str, size: int) -> None:
    import torchvision

    from edgekit.adapters.torchvision_detection import TorchvisionDetector
    from edgekit.tasks.boxes import decode

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=5).eval()
    adapter = TorchvisionDetector(model).eval()
    adapter.load_state_dict(model.state_dict())  # torchvision's keys: its own weights load as they are
    model.transform = _NoTransform()
    model.head.register_forward_hook(_one_class_per_anchor)
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        raw = adapter(images).numpy()
        expected = model(list(images))
    ssd = "ssd" in name
    assert raw.shape[:2] == (2, 4 + (4 if ssd else 5))  # SSD: background dropped
    for image, want in zip(raw, expected):
        got = decode(image[None], conf=model.score_thresh, iou=model.nms_thresh, max_det=model.detections_per_img)[0]
        top = min(50, len(want["boxes"]))
        assert top >= 10, f"too few detections to compare ({top})"
        np.testing.assert_allclose(got.boxes[:top], want["boxes"][:top].numpy(), atol=1e-3, rtol=0)
        np.testing.assert_allclose(got.scores[:top], want["scores"][:top].numpy(), atol=1e-6, rtol=0)
        np.testing.assert_array_equal(got.classes[:top] + int(ssd), want["labels"][:top].numpy())


SEGMENTERS = [
    pytest.param("lraspp_mobilenet_v3_large", id="lraspp"),
    pytest.param("deeplabv3_mobilenet_v3_large", id="deeplabv3_mobilenet"),
    pytest.param("deeplabv3_resnet50", id="deeplabv3_resnet50", marks=RESNET),
    pytest.param("fcn_resnet50", id="fcn_resnet50", marks=RESNET),
]


@pytest.mark.parametrize("name", SEGMENTERS)
def test_segmenter_adapter_returns_torchvisions_out_tensor(name: str) -> None:
    import torchvision

    from edgekit.adapters.torchvision_segmentation import TorchvisionSegmenter

    torch.manual_seed(0)
    aux = {} if name.startswith("lraspp") else {"aux_loss": True}
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=4, **aux).eval()
    adapter = TorchvisionSegmenter(model).eval()
    adapter.load_state_dict(model.state_dict())  # aux head's weights too: it is kept, never run
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = adapter(images)
        torch.testing.assert_close(out, model(images)["out"], rtol=0, atol=0)
    assert out.shape == (2, 4, 64, 64)


def test_sources_build_the_adapters_and_refuse_two_stage_detectors(tmp_path: Path) -> None:
    from edgekit.adapters.torchvision_detection import TorchvisionDetector, single_stage_names
    from edgekit.adapters.torchvision_segmentation import TorchvisionSegmenter

    assert single_stage_names() == ["fcos_resnet50_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
                                    "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"]
    detector = load_model("torchvision:ssdlite320_mobilenet_v3_large", {"num_classes": 3}).module
    assert isinstance(detector, TorchvisionDetector) and not detector.training
    assert detector(torch.zeros(1, 3, 160, 160)).shape[1] == 4 + 2
    segmenter = load_model("torchvision:lraspp_mobilenet_v3_large", {"num_classes": 3}).module
    assert isinstance(segmenter, TorchvisionSegmenter)
    for name in ("fasterrcnn_mobilenet_v3_large_320_fpn", "maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn"):
        with pytest.raises(EdgekitError, match="two-stage detector.*ssdlite320_mobilenet_v3_large") as caught:
            load_model(f"torchvision:{name}")
        assert "\n" not in str(caught.value)
    with pytest.raises(EdgekitError, match="could not build"):
        load_model("torchvision:ssdlite320_mobilenet_v3_large", {"num_classes": "ten"})
    done = subprocess.run([*EDGEKIT, "export", "torchvision:fasterrcnn_resnet50_fpn", "--input-shape", "1,3,64,64",
                           "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "two-stage" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_segmenter_read_as_a_detector_is_one_line(tmp_path: Path) -> None:
    from edgekit.runtime import open_runner
    from edgekit.tasks import get_task

    torch.manual_seed(0)
    model = load_model("torchvision:lraspp_mobilenet_v3_large", {"num_classes": 3}).module
    path = tmp_path / "seg.onnx"
    result = export_onnx(model, torch.randn(1, 3, 64, 64), path)
    assert result.parity.passed and result.manifest["outputs"] == [
        {"name": "output", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    get_task("segmentation").check_outputs(path, open_runner(str(path)))
    with pytest.raises(EdgekitError, match=r"needs \[N, 4 \+ classes, anchors\]"):
        get_task("detection").check_outputs(path, open_runner(str(path)))


# -- several outputs ---------------------------------------------------------------------------------

class TwoHeads(torch.nn.Module):
    """A small conv net with three outputs, in an order TFLite does not keep (measured: it lists the
    4-D one first): class scores [N, 5], feature maps [N, 8, H, W], flattened maps [N, 8, H*W]."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.as_tuple = as_tuple
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> Any:
        maps = self.body(x)
        scores = self.fc(maps.mean((2, 3)))
        if self.as_tuple:
            return scores, maps
        return {"scores": scores, "maps": maps, "flat": maps.flatten(2) * 0.5}


def _scale_output(model: onnx.ModelProto, name: str, factor: float) -> None:
    """Multiply graph output ``name`` by ``factor`` (a wrong constant in one output only)."""
    from onnx import helper, numpy_helper

    for node in model.graph.node:  # the producer and every consumer inside the graph use the unscaled tensor
        node.output[:] = [f"{o}_pre" if o == name else o for o in node.output]
        node.input[:] = [f"{i}_pre" if i == name else i for i in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), f"{name}_factor"))
    model.graph.node.append(helper.make_node("Mul", [f"{name}_pre", f"{name}_factor"], [name]))


def test_several_outputs_export_with_parity_per_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.export import onnx_export
    from edgekit.export.parity import OutputsParity

    torch.manual_seed(0)
    model = TwoHeads().eval()
    path = tmp_path / "two.onnx"
    result = export_onnx(model, torch.randn(1, 3, 16, 16), path)
    assert isinstance(result.parity, OutputsParity) and result.parity.passed
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["scores", "maps", "flat"]
    assert result.manifest["outputs"] == [{"name": "scores", "shape": [1, 5], "dtype": "float32"},
                                          {"name": "maps", "shape": [1, 8, 16, 16], "dtype": "float32"},
                                          {"name": "flat", "shape": [1, 8, 256], "dtype": "float32"}]
    parity = result.manifest["stages"][-1]["parity"]
    assert parity["passed"] and list(parity["outputs"]) == ["scores", "maps", "flat"]
    assert all(r["rule"] == "float32-noise" and r["passed"] for r in parity["outputs"].values())
    assert "scores:" in result.parity.summary() and "flat:" in result.parity.summary()

    pair = export_onnx(TwoHeads(as_tuple=True).eval(), torch.randn(1, 3, 16, 16), tmp_path / "pair.onnx")
    assert [o["name"] for o in pair.manifest["outputs"]] == ["output", "output_1"] and pair.parity.passed

    graph = onnx.load(str(path))
    _scale_output(graph, "flat", 1.001)  # 1e-3 of one output: far above float32's noise, nothing else changed
    broken = tmp_path / "broken.onnx"
    onnx.save(graph, str(broken))
    report = prove_parity(model, broken, (1, 3, 16, 16), count=2)
    assert not report.passed and report.failing == ["flat"], report.summary()
    assert report.reports["scores"].passed and report.reports["maps"].passed
    assert "FAIL in output 'flat'" in report.summary()

    checked = onnx_export._check_and_infer

    def check_then_break(tmp: Path, output: Path, names: Any) -> None:
        checked(tmp, output, names)
        wrong = onnx.load(str(tmp))
        _scale_output(wrong, "maps", 1.001)
        onnx.save(wrong, str(tmp))

    monkeypatch.setattr(onnx_export, "_check_and_infer", check_then_break)
    with pytest.raises(ParityError, match="ONNX output 'maps' differs from PyTorch") as caught:
        export_onnx(model, torch.randn(1, 3, 16, 16), tmp_path / "faulty.onnx")
    assert "\n" not in str(caught.value) and not (tmp_path / "faulty.onnx").exists()


def test_outputs_a_model_cannot_export_are_one_line(tmp_path: Path) -> None:
    class Nested(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return {"a": x * 2, "b": (x, x + 1)}

    class InputNamed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> Any:
            return {"input": x * 2}

    with pytest.raises(EdgekitError, match="model output 'b' is a tuple"):
        export_onnx(Nested(), torch.randn(1, 3, 4, 4), tmp_path / "n.onnx")
    with pytest.raises(EdgekitError, match="other than the input's name 'input'"):
        export_onnx(InputNamed(), torch.randn(1, 3, 4, 4), tmp_path / "i.onnx")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_several_outputs_come_back_in_onnx_order_and_layout_from_both_int8_runtimes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.manifest import read_manifest
    from edgekit.quantize.ort import quantize_ort_workflow
    from edgekit.quantize.tflite import quantize_tflite
    from edgekit.runtime import open_runner

    monkeypatch.chdir(tmp_path)
    images = digit_images(16, 96)
    torch.manual_seed(0)
    model = set_batchnorm(TwoHeads(), images[:32])
    fp32 = tmp_path / "two.onnx"
    export_onnx(model, torch.from_numpy(images[:1]), fp32)
    quantize_ort_workflow(fp32, tmp_path / "two.int8.onnx", images[:80], holdout=images[80:], progress=False,
                          log=lambda _: None, sensitivity=False)
    quantize_tflite(fp32, tmp_path / "two.int8.tflite", images[:80], holdout=images[80:], progress=False)
    probe = images[80:]
    expected = open_runner(str(fp32)).predict_all(probe)
    assert [e.shape for e in expected] == [(16, 5), (16, 8, 16, 16), (16, 8, 256)]
    for artifact in ("two.int8.onnx", "two.int8.tflite", "two.fp32.tflite"):
        runner = open_runner(str(tmp_path / artifact))
        outputs = runner.predict_all(probe)
        assert [o.shape for o in outputs] == [e.shape for e in expected], artifact
        for name, got, want in zip(("scores", "maps", "flat"), outputs, expected):
            assert _cosine(got, want) > 0.99, (artifact, name, _cosine(got, want))
        np.testing.assert_array_equal(runner.predict(probe), outputs[0])  # predict: the first output
    named = [o.get("onnx_name") for o in read_manifest(tmp_path / "two.int8.tflite")["outputs"]]
    assert named == ["scores", "maps", "flat"]


# -- torchvision models through export and both quantizers --------------------------------------------

# name: (task, input size, ORT cosine floor, TFLite cosine floor). Random-weight nets, ORT without its
# sensitivity ranking and remedies: the floors catch a broken conversion (cosine ~0), they do not
# grade fidelity; benchmarks/bench_torchvision_tasks.py has the measured figures (0.89-0.95 here)
THROUGH = {
    "lraspp_mobilenet_v3_large": ("segmentation", 64, 0.8, 0.8),
    "ssdlite320_mobilenet_v3_large": ("detection", 160, 0.8, 0.8),
    "fcos_resnet50_fpn": ("detection", 128, 0.8, 0.8),
    "retinanet_resnet50_fpn": ("detection", 128, 0.8, 0.8),
    "retinanet_resnet50_fpn_v2": ("detection", 128, 0.8, 0.8),
    "ssd300_vgg16": ("detection", 300, 0.8, 0.8),
    "deeplabv3_mobilenet_v3_large": ("segmentation", 128, 0.8, 0.8),
    "fcn_resnet50": ("segmentation", 128, 0.8, 0.8),
    "deeplabv3_resnet50": ("segmentation", 128, 0.8, 0.8),
}
FAST = ("lraspp_mobilenet_v3_large",)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in FAST else RESNET) for n in THROUGH])
def test_torchvision_model_exports_and_quantizes_for_both_runtimes(name: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.quantize.ort import quantize_ort_workflow
    from edgekit.quantize.tflite import quantize_tflite

    monkeypatch.chdir(tmp_path)
    task, size, ort_floor, tflite_floor = THROUGH[name]
    images = digit_images(size, 96)
    torch.manual_seed(0)
    model = set_batchnorm(load_model(f"torchvision:{name}", {"num_classes": 10}).module, images[:32])
    fp32 = tmp_path / f"{name}.onnx"
    result = export_onnx(model, torch.from_numpy(images[:1]), fp32)
    assert result.parity.passed, result.parity.summary()
    calib, held = images[32:80], images[80:]
    ort = quantize_ort_workflow(fp32, tmp_path / f"{name}.int8.onnx", calib, holdout=held, task=task,
                                progress=False, log=lambda _: None, sensitivity=False, remedies=False)
    assert ort.fidelity is not None and ort.fidelity.cosine >= ort_floor, (name, ort.fidelity)
    tflite = quantize_tflite(fp32, tmp_path / f"{name}.int8.tflite", calib, holdout=held, task=task,
                             write_fp32=False, progress=False)
    assert tflite.fidelity is not None and tflite.fidelity.cosine >= tflite_floor, (name, tflite.fidelity)
