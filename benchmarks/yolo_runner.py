"""Ultralytics' side of bench_detection.py, run in .venv-yolo (Ultralytics' exporters want packages,
and versions, that edgekit's environment must not get): train one YOLOv8n, or export it.

    python yolo_runner.py train WORK DATA_YAML EPOCHS INFO_JSON
    python yolo_runner.py export WEIGHTS FORMAT INT8(0|1) DATA_YAML SPLIT INFO_JSON

Writes INFO_JSON: the file made, the seconds its train() / export() call took (heavy imports done
before the clock starts) and the versions used. Nothing is downloaded: the caller sets YOLO_OFFLINE,
YOLO_AUTOINSTALL=False (a missing requirement is an error, never a pip install) and a local data YAML;
the model is built from ``yolov8n.yaml``, not fetched weights.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    found = {}
    for name in ("ultralytics", "torch", "onnx", "onnxruntime", "onnxslim", "litert-torch", "ai-edge-quantizer",
                 "ai-edge-litert", "numpy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def train(work: Path, data: str, epochs: int) -> dict[str, Any]:
    """YOLOv8n from its YAML (random init), trained at 64 px on CPU; no flips (a mirrored digit is another
    glyph), no plots (a plot fetches a font)."""
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    started = time.perf_counter()
    model.train(data=data, imgsz=64, epochs=epochs, batch=32, workers=0, device="cpu", project=str(work),
                name="train", exist_ok=True, plots=False, fliplr=0.0, amp=False, seed=0, deterministic=True,
                verbose=False)
    seconds = time.perf_counter() - started
    best = work / "train" / "weights" / "best.pt"
    return {"file": str(best), "seconds": round(seconds, 1)}


def export(weights: Path, fmt: str, int8: bool, data: str, split: str) -> dict[str, Any]:
    """One export from a private copy of ``weights`` (an INT8 ONNX export deletes the FP32 ONNX beside it)."""
    from ultralytics import YOLO

    folder = weights.parent.parent / f"export-{fmt}{'-int8' if int8 else ''}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    copy = folder / weights.name
    shutil.copy2(weights, copy)
    if fmt in ("tflite", "litert"):
        import ai_edge_quantizer  # noqa: F401 - imports before the clock, as the other tools' are
        import litert_torch  # noqa: F401
    import onnxruntime  # noqa: F401

    model = YOLO(str(copy))
    options: dict[str, Any] = {"format": fmt, "imgsz": 64, "device": "cpu"}
    if fmt == "onnx":
        options.update(opset=17, simplify=True)
    if int8:
        options.update(int8=True, data=data, split=split)
    started = time.perf_counter()
    made = model.export(**options)
    seconds = time.perf_counter() - started
    return {"file": str(made), "seconds": round(seconds, 1), "options": options}


def main(argv: list[str]) -> None:
    step, *args = argv
    if step == "train":
        work, data, epochs, info = args
        result = train(Path(work), data, int(epochs))
    elif step == "export":
        weights, fmt, int8, data, split, info = args
        result = export(Path(weights), fmt, int8 == "1", data, split)
    else:
        raise SystemExit(f"unknown step {step!r}")
    Path(info).write_text(json.dumps({**result, "versions": versions()}))


if __name__ == "__main__":
    main(sys.argv[1:])
