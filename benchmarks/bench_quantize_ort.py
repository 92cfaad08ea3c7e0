"""ONNX Runtime INT8: every --auto candidate against FP32 (speed, size) on ResNet-18 and
MobileNet-V2, and edgekit's defaults against ORT's own default quantize_static settings
(speed and accuracy, on the trained digits CNN where accuracy means something)."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import interleaved_p50_ms, log, markdown, row_labelled, save_summary
from models import export, smooth_images
from edgekit.quantize.ort import OrtQuantSettings, quantize_ort
from edgekit.quantize.ort.settings import host_defaults
from edgekit.quantize.ort.auto import CANDIDATES
from edgekit.runtime import open_runner


def candidates_table(name: str, folder: Path, images: np.ndarray) -> tuple[list[list[str]], dict]:
    fp32 = export(name, folder, images)
    paths = {"FP32": fp32}
    for index, settings in enumerate(CANDIDATES):
        out = folder / f"{name}.{index}.onnx"
        quantize_ort(fp32, out, images[:32], settings, progress=False)
        paths[settings.label()] = out
    runners = {label: open_runner(str(path), threads=2) for label, path in paths.items()}
    feeds = {label: r.example_feeds() for label, r in runners.items()}
    log(f"{name}: timing FP32 and {len(CANDIDATES)} INT8 candidates interleaved ...")
    p50 = interleaved_p50_ms({label: (lambda r=r, f=feeds[label]: r.run(f)) for label, r in runners.items()}, rounds=6)
    reference = runners["FP32"].predict(images[32:])
    rows = []
    for label, path in paths.items():
        out = runners[label].predict(images[32:])
        # random weights give near-flat logits, so argmax agreement is fragile: report the cosine of the logits
        cosine = float(np.mean(np.sum(out * reference, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(reference, axis=1))))
        rows.append([name, label, f"{p50[label]:.2f}", f"{p50['FP32'] / p50[label]:.2f}x", f"{cosine:.4f}",
                     f"{path.stat().st_size / 1e6:.1f}"])
    best = min((label for label in paths if label != "FP32"), key=lambda label: p50[label])
    return rows, {"best": best, "speedup": p50["FP32"] / p50[best]}


EDGEKIT_DEFAULT = "edgekit default on this host ({})"
ORT_DEFAULT = "ORT quantize_static default (QDQ S8S8 per-tensor)"


def defaults_summary(table: list[list[str]], chosen: str) -> dict[str, str]:
    """The summary line of the defaults table ([config, top-1 %, p50 ms, vs FP32] rows), quoting
    the edgekit-default row (settings ``chosen``) and the ORT-default row by their labels."""
    ours, theirs = row_labelled(table, EDGEKIT_DEFAULT.format(chosen)), row_labelled(table, ORT_DEFAULT)
    return {"comparison": "edgekit vs ORT default quantization (digits CNN)", "metric": "top-1 / speed vs FP32",
            "value": f"edgekit {ours[1]}% {ours[3]} ({chosen}), ORT default {theirs[1]}% {theirs[3]}"}


def defaults_vs_ort(folder: Path) -> list[list[str]]:
    """Same trained model, same calibration data: edgekit's defaults vs quantize_static's defaults."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    from edgekit.data import calibration_tensors
    from edgekit.distill import train
    from edgekit.evaluate import evaluate
    from edgekit.export import export_onnx
    from edgekit.zoo import digits_cnn

    torch.manual_seed(0)
    model = digits_cnn(width=32)
    train(model, "builtin:digits/train", "digits", val_source="builtin:digits/val", epochs=6, progress=False,
          log=lambda _: None)
    fp32 = folder / "digits.onnx"
    export_onnx(model, torch.zeros(1, 3, 32, 32), fp32)
    calib = calibration_tensors("builtin:digits/train", "digits", 200, progress=False)
    ours = folder / "digits.edgekit.onnx"
    chosen = host_defaults()  # 7-bit weights on x86-64 without VNNI, 8-bit elsewhere
    quantize_ort(fp32, ours, calib, chosen, progress=False)
    eight_bit = folder / "digits.u8s8.onnx"  # the same without reduce_range: shows saturation where it bites
    quantize_ort(fp32, eight_bit, calib, OrtQuantSettings(reduce_range=False), progress=False)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": c[None]} for c in calib])

        def get_next(self):  # noqa: ANN201
            return next(self.items, None)

    theirs = folder / "digits.ortdefault.onnx"
    quantize_static(str(fp32), str(theirs), Reader())  # ORT defaults: QDQ, S8S8, per-tensor, MinMax
    variants = (("FP32", fp32), (EDGEKIT_DEFAULT.format(chosen.label()), ours),
                ("QDQ U8S8 per-channel, 8-bit weights", eight_bit), (ORT_DEFAULT, theirs))
    runners = {label: open_runner(str(p), threads=2) for label, p in variants}
    feeds = {label: r.example_feeds() for label, r in runners.items()}
    p50 = interleaved_p50_ms({label: (lambda r=r, f=feeds[label]: r.run(f)) for label, r in runners.items()}, rounds=6)
    rows = []
    for label, path in variants:
        top1 = evaluate(path, "builtin:digits/test", "digits")["top1"]
        rows.append([label, f"{top1:.2f}", f"{p50[label]:.3f}", f"{p50['FP32'] / p50[label]:.2f}x"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    args = parser.parse_args()
    images = smooth_images(48)
    rows, summary = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            table, best = candidates_table(name, Path(folder), images)
            rows += table
            summary.append({"comparison": f"{name}: fastest INT8 candidate vs FP32 (ORT)", "metric": "p50 latency",
                            "value": f"{best['best']}: {best['speedup']:.2f}x"})
        defaults = defaults_vs_ort(Path(folder))
    print("## ONNX Runtime INT8 candidates vs FP32 (224x224, 2 threads, this machine)\n")
    print(markdown(rows, ["model", "config", "p50 ms", "vs FP32", "logit cosine vs FP32", "MB"]))
    print("\n## edgekit's defaults vs ONNX Runtime's quantize_static defaults (trained digits CNN)\n")
    print(markdown(defaults, ["config", "top-1 %", "p50 ms", "vs FP32"]))
    summary.append(defaults_summary(defaults, host_defaults().label()))
    save_summary("quantize_ort", summary)


if __name__ == "__main__":
    main()
