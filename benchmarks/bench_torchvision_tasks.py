"""torchvision's detectors and segmenters through edgekit: export (parity per output), ONNX Runtime
static INT8 (without sensitivity ranking and remedies, see ORT_OPTIONS) and TFLite full-integer INT8,
each INT8 model's output cosine against FP32.

Random weights (nothing is downloaded), BatchNorm statistics set on 48 digit canvases upsampled to
the model's input size (as in a trained net; tests/test_families.py does the same), 64 calibration
and 16 held-out canvases. Prints one JSON line per model and writes them to
benchmarks/results/torchvision_tasks.json.

    PYTHONPATH=. python benchmarks/bench_torchvision_tasks.py                          # every model
    PYTHONPATH=. python benchmarks/bench_torchvision_tasks.py ssdlite320_mobilenet_v3_large@320
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekit.errors import EdgekitError, first_line
from edgekit.export import export_onnx
from edgekit.sources import load_model

RESULTS = Path(__file__).resolve().parent / "results" / "torchvision_tasks.json"
MODELS = {  # name: (task, input size): the smallest size each runs at, except SSD300's VGG, which needs ~300
    "ssdlite320_mobilenet_v3_large": ("detection", 160),
    "fcos_resnet50_fpn": ("detection", 128),
    "retinanet_resnet50_fpn": ("detection", 128),
    "retinanet_resnet50_fpn_v2": ("detection", 128),
    "ssd300_vgg16": ("detection", 300),
    "lraspp_mobilenet_v3_large": ("segmentation", 128),
    "deeplabv3_mobilenet_v3_large": ("segmentation", 128),
    "fcn_resnet50": ("segmentation", 128),
    "deeplabv3_resnet50": ("segmentation", 128),
    "fcn_resnet101": ("segmentation", 128),
    "deeplabv3_resnet101": ("segmentation", 128),
}
CLASSES = 10
# ONNX Runtime without the per-layer sensitivity ranking and the remedies it drives: minutes per
# ResNet-50 on a shared 2-core machine, and what they would tune is a random-weight net's fidelity
ORT_OPTIONS = {"sensitivity": False, "remedies": False}


def canvases(size: int, count: int = 128) -> np.ndarray:
    """Digit canvases (builtin:digits-detect) as 3-channel ImageNet-normalised NCHW at ``size``."""
    from edgekit.data import calibration_tensors

    gray = torch.from_numpy(calibration_tensors("builtin:digits-detect/train", "digits-canvas", count, seed=0,
                                                progress=False))
    rgb = torch.nn.functional.interpolate(gray, size=(size, size), mode="bilinear").repeat(1, 3, 1, 1)
    mean, std = torch.tensor([0.485, 0.456, 0.406])[:, None, None], torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return ((rgb - mean) / std).numpy()


def set_batchnorm(model: torch.nn.Module, images: np.ndarray) -> torch.nn.Module:
    """BatchNorm running statistics averaged over ``images`` (momentum None), as a trained net has."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in torch.from_numpy(images).split(16):
            model(batch)
    return model.eval()


def parity_figures(report: Any) -> dict[str, Any]:
    reports = getattr(report, "reports", {"output": report})
    return {name: {"passed": r.passed, "max_abs": float(f"{r.max_abs_error:.3g}"),
                   "of_max_output": float(f"{r.relative_error:.3g}"),
                   "noise_ratio": r.noise_ratio and round(r.noise_ratio, 2), "rms_ratio": r.rms_ratio and round(r.rms_ratio, 2),
                   "min_cosine": round(r.min_cosine, 7)} for name, r in reports.items()}


def run(name: str, task: str, size: int, folder: Path) -> dict[str, Any]:
    from edgekit.quantize.ort import quantize_ort_workflow
    from edgekit.quantize.tflite import quantize_tflite

    images = canvases(size)
    row: dict[str, Any] = {"model": name, "task": task, "size": size}
    torch.manual_seed(0)
    started = time.perf_counter()
    model = set_batchnorm(load_model(f"torchvision:{name}", {"num_classes": CLASSES}).module, images[:48])
    row["build_s"] = round(time.perf_counter() - started, 1)
    fp32 = folder / f"{name}.onnx"
    started = time.perf_counter()
    result = export_onnx(model, torch.from_numpy(images[:1]), fp32)
    row.update(export_s=round(time.perf_counter() - started, 1), exporter=result.exporter,
               export_graph_s=round(result.seconds, 1), outputs=result.manifest["outputs"],
               parity=parity_figures(result.parity))
    calib, held = images[48:112], images[112:128]
    for runtime, quantize in (
        ("ort", lambda: quantize_ort_workflow(fp32, folder / f"{name}.int8.onnx", calib, holdout=held, task=task,
                                              progress=False, log=lambda _: None, **ORT_OPTIONS)),
        ("tflite", lambda: quantize_tflite(fp32, folder / f"{name}.int8.tflite", calib, holdout=held, task=task,
                                           write_fp32=False, progress=False)),
    ):
        started = time.perf_counter()
        try:
            done = quantize()
        except EdgekitError as exc:
            row[runtime] = {"ok": False, "error": first_line(exc), "s": round(time.perf_counter() - started, 1)}
            continue
        fidelity = done.fidelity
        row[runtime] = {"ok": True, "s": round(time.perf_counter() - started, 1), "label": done.label,
                        "full_integer": done.full_integer,
                        "cosine": fidelity and round(fidelity.cosine, 5), "agreement": fidelity and round(fidelity.agreement, 1),
                        "output_tail": (done.details.get("output_tail") or {}).get("chosen")}
    return row


def main(argv: list[str]) -> None:
    chosen = argv or list(MODELS)
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for spec in chosen:
        name, _, size = spec.partition("@")
        task, default = MODELS[name]
        with tempfile.TemporaryDirectory() as folder:
            row = run(name, task, int(size or default), Path(folder))
        print(json.dumps(row), flush=True)
        rows[f"{name}@{row['size']}"] = row
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
