"""Ultralytics YOLO as a model source: built from its YAML or a checkpoint without running code from
either, answering in the detection layout, pruned with its head kept, saved and rebuilt, exported
with parity; and, trained on builtin:digits-detect, an INT8 that keeps its mAP where a naive INT8
configuration of its head loses it (real ONNX Runtime sessions and TFLite interpreters)."""
from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("ultralytics") is None:  # not imported here: its import patches PIL for the whole session
    pytest.skip("needs ultralytics (the yolo extra)", allow_module_level=True)

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.sources import load_model, save_module  # noqa: E402

EDGEKIT = [sys.executable, "-m", "edgekit"]
DIGITS = {"nc": 10, "ch": 1}


@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolo11n.yaml", "yolov10n.yaml"])
def test_a_yaml_builds_a_detector_that_answers_in_the_detection_layout(yaml: str) -> None:
    from edgekit.adapters.ultralytics import YoloDetector

    torch.manual_seed(0)
    model = load_model(f"ultralytics:{yaml}", dict(DIGITS)).module
    assert not any(type(m).__name__ in ("C2f", "C3k2", "C2PSA") for m in model.modules())  # all split
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (2, 14, 84)  # 4 box values + 10 scores, anchors at strides 8/16/32
    assert float(out[:, 4:].min()) >= 0 and float(out[:, 4:].max()) <= 1  # sigmoid scores
    model.train()
    assert model(x).shape == (2, 14, 84)  # training answers in the same layout (edgekit's loss reads it)
    assert isinstance(model, YoloDetector)


def test_the_two_convolution_form_computes_what_ultralytics_chunked_form_computes() -> None:
    from ultralytics.nn.tasks import DetectionModel

    from edgekit.adapters.ultralytics import YoloDetector, split_chunked_convs

    torch.manual_seed(0)
    original = DetectionModel("yolo11n.yaml", ch=3, nc=5, verbose=False)
    for module in original.modules():  # trained-like BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    chunked = YoloDetector(copy.deepcopy(original)).eval()
    split = YoloDetector(original).eval()
    assert split_chunked_convs(split) == 9
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(chunked(x), split(x))


def test_pruning_keeps_the_head_and_the_pruned_file_rebuilds(tmp_path: Path) -> None:
    from edgekit.prune import prune

    torch.manual_seed(0)
    model = load_model("ultralytics:yolov8n.yaml", dict(DIGITS)).module
    x = torch.randn(1, 1, 64, 64)
    stage = prune(model, x, ratio=0.5, progress=None)
    assert stage["macs_after"] < 0.4 * stage["macs_before"], stage
    head = model.model.model[-1]
    assert [seq[-1].out_channels for seq in head.cv2] == [64, 64, 64]  # 4 x 16 DFL bins per box side
    assert [seq[-1].out_channels for seq in head.cv3] == [10, 10, 10]
    assert not any(p.requires_grad for p in head.dfl.parameters())  # DFL is a fixed projection
    save_module(model, tmp_path / "pruned.pt", x)
    rebuilt = load_model(str(tmp_path / "pruned.pt")).module
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt(x))
    done = subprocess.run([*EDGEKIT, "export", str(tmp_path / "pruned.pt"), "--input-shape", "1,1,64,64", "-o",
                           str(tmp_path / "pruned.onnx")], capture_output=True, text=True)
    assert done.returncode == 0 and "parity PASS" in done.stdout + done.stderr, done.stderr


def _checkpoint(path: Path) -> torch.nn.Module:
    """A checkpoint shaped like Ultralytics' trainer's (``ema`` in half precision, train args)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(1)
    model = DetectionModel("yolov8n.yaml", ch=1, nc=3, verbose=False)
    torch.save({"epoch": -1, "model": None, "ema": copy.deepcopy(model).half(), "updates": 10,
                "train_args": {"imgsz": 64, "data": "digits.yaml"}, "date": "2026-11-27", "version": "8.4.190"}, path)
    return model.eval()


def test_a_trained_checkpoint_loads_without_running_its_code(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "best.pt")
    loaded = load_model(f"ultralytics:{tmp_path / 'best.pt'}").module
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        ours, theirs = loaded(x), model.half().float()(x)[0]
    assert ours.shape == (1, 7, 84) and torch.allclose(ours, theirs, atol=1e-4)
    assert all(p.requires_grad for n, p in loaded.named_parameters() if ".dfl." not in n)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a hostile checkpoint does: run a command while unpickling
        return (Path.touch, (self.marker,))


def test_a_hostile_checkpoint_is_one_line_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": _Payload(marker), "ema": None}, tmp_path / "evil.pt")
    done = subprocess.run([*EDGEKIT, "export", f"ultralytics:{tmp_path / 'evil.pt'}", "--input-shape", "1,3,64,64",
                           "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert done.returncode == 2 and not marker.exists(), done.stderr
    assert "not loadable without running its code" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_corrupt_checkpoint_named_like_an_official_one_is_one_line_and_kept(tmp_path: Path) -> None:
    """Ultralytics deletes and re-downloads a corrupt file requested by an official bare name; edgekit
    must neither delete the user's file nor download anything."""
    (tmp_path / "yolov8n.pt").write_bytes(b"PK\x03\x04 truncated")
    done = subprocess.run([*EDGEKIT, "export", "ultralytics:yolov8n.pt", "--input-shape", "1,3,64,64", "-o",
                           "x.onnx"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not loadable without running its code" in done.stderr
    assert (tmp_path / "yolov8n.pt").read_bytes() == b"PK\x03\x04 truncated" and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("spec, kwargs, says", [
    ("ultralytics:missing/best.pt", {}, "checkpoint not found"),
    ("ultralytics:yolov8n-seg.yaml", {}, "instance"),
    ("ultralytics:yolov8n-cls.yaml", {}, "classification model"),
    ("ultralytics:yolov8n.yaml", {"depth": 2}, "takes only nc, ch"),
    ("ultralytics:nosuchmodel9.yaml", {}, "not a model YAML"),
    ("ultralytics:yolov8n", {}, "expected a model YAML"),
])
def test_what_ultralytics_cannot_give_is_one_line(spec: str, kwargs: dict, says: str) -> None:
    with pytest.raises(EdgekitError, match=says):
        load_model(spec, kwargs)


@pytest.fixture(scope="module")
def trained_yolo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """YOLOv8n from its YAML, trained 4 epochs on builtin:digits-detect/train (~1 min on 2 cores), exported."""
    from edgekit.distill import fit
    from edgekit.export import export_onnx

    torch.manual_seed(0)
    model = load_model("ultralytics:yolov8n.yaml", dict(DIGITS)).module
    fit(model, "builtin:digits-detect/train", "digits-canvas", epochs=4, lr=0.004, batch_size=32,
        task="detection", progress=False)
    out = tmp_path_factory.mktemp("yolo") / "fp32.onnx"
    export_onnx(model.eval(), torch.zeros(1, 1, 64, 64), out)
    return out


def _map(artifact: Path, reference: Path) -> dict:
    out = artifact.with_suffix(".eval.json")
    subprocess.run([*EDGEKIT, "eval", str(artifact), "--data", "builtin:digits-detect/test", "--recipe",
                    "digits-canvas", "--task", "detection", "--reference", str(reference), "--json", str(out),
                    "--force"], capture_output=True, text=True, check=True)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("runtime, suffix, naive_flags", [
    ("onnxruntime", ".onnx", ["--no-remedies", "--no-sensitivity"]),
    ("tflite", ".tflite", []),
])
def test_yolo_int8_keeps_its_map_where_a_naive_head_loses_it(trained_yolo: Path, runtime: str, suffix: str,
                                                             naive_flags: list[str]) -> None:
    """The failure of ultralytics #9473 / onnxruntime #14233 (box pixels and class scores meet in one
    quantized Concat), reproduced by quantizing the whole graph, and cured by edgekit's default."""
    folder = trained_yolo.parent
    common = ["--calib", "builtin:digits-detect/train", "--recipe", "digits-canvas", "--num-samples", "200",
              "--runtime", runtime]
    naive, int8 = folder / f"naive{suffix}", folder / f"int8{suffix}"
    subprocess.run([*EDGEKIT, "quantize", str(trained_yolo), *common, *naive_flags, "-o", str(naive)],
                   check=True, capture_output=True)
    subprocess.run([*EDGEKIT, "quantize", str(trained_yolo), *common, "--task", "detection", "-o", str(int8)],
                   check=True, capture_output=True)
    fp32 = _map(trained_yolo, trained_yolo)
    # it learned to detect (untrained: 0). Training's float sums differ with the CPU's kernels (AVX-512 vs AVX2),
    # so the same 4 epochs give FP32 ~45 on a Xeon and 38.8 on an AVX2-only EPYC: the bar is "learned", not a score
    assert fp32["map50_95"] > 25, fp32
    kept = fp32["map50_95"] - _map(int8, trained_yolo)["map50_95"]
    lost = fp32["map50_95"] - _map(naive, trained_yolo)["map50_95"]
    # within the 2 points; the naive head loses most of it (measured: all, 0 mAP; 4 epochs: FP32 ~45)
    assert kept < 2.0 and lost > kept + 10, (fp32["map50_95"], kept, lost)
    stage = json.loads(Path(f"{int8}.json").read_text())["stages"][-1]
    assert stage["task"] == "detection" and stage["output_tail"]["chosen"] == "tail in float", stage["output_tail"]


def test_building_a_yolo_leaves_pil_and_torch_as_they_were(tmp_path: Path) -> None:
    """Ultralytics replaces PIL.Image.open and torch.save on import; a corrupt image must still be PIL's
    own error (edgekit names it), never Ultralytics' attempt to install an image plugin."""
    from PIL import Image, UnidentifiedImageError

    load_model("ultralytics:yolov8n.yaml", dict(DIGITS))
    assert Image.open.__module__ == "PIL.Image" and torch.save.__module__ == "torch.serialization"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(UnidentifiedImageError):
        Image.open(broken)
