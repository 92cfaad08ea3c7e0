"""TFLite full-integer INT8: edgekit's fast path against onnx2tf's own integer path.

Prints, per model: conversion time of each (ratio), agreement of their INT8 outputs, FP32 vs INT8
TFLite latency, and sizes. onnx2tf's own path serialises Keras metadata and takes minutes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import interleaved_p50_ms, log, markdown, save_summary
from models import export, smooth_images
from edgekit.quantize.tflite import quantize_tflite
from edgekit.quantize.tflite.keras_build import ONNX2TF_SAMPLE_FILE, quiet_tensorflow
from edgekit.runtime import open_runner


def onnx2tf_integer(onnx_path: Path, calib: np.ndarray, work: Path) -> tuple[Path, float]:
    """onnx2tf's own integer path, fed the same calibration tensors (NHWC, already normalised)."""
    import onnx2tf

    work.mkdir(parents=True, exist_ok=True)
    nhwc = calib.transpose(0, 2, 3, 1).astype(np.float32)
    np.save(work / ONNX2TF_SAMPLE_FILE, nhwc[:20])
    np.save(work / "calib.npy", nhwc)
    shutil.copyfile(onnx_path, work / "model.onnx")
    previous = os.getcwd()
    os.chdir(work)
    start = time.perf_counter()
    try:
        with quiet_tensorflow():
            onnx2tf.convert(input_onnx_file_path=str(work / "model.onnx"), output_folder_path=str(work / "out"),
                            output_integer_quantized_tflite=True, non_verbose=True,
                            custom_input_op_name_np_data_path=[["input", str(work / "calib.npy"),
                                                                [[[[0.0, 0.0, 0.0]]]], [[[[1.0, 1.0, 1.0]]]]]])
    finally:
        os.chdir(previous)
    return work / "out" / "model_full_integer_quant.tflite", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--skip-onnx2tf", action="store_true", help="skip onnx2tf's slow path")
    args = parser.parse_args()
    images = smooth_images(64)
    calib, test = images[:48], images[48:]
    rows, summary = [], []
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder)
            onnx_path = export(name, work, images)
            log(f"{name}: edgekit fast path ...")
            start = time.perf_counter()
            quantize_tflite(onnx_path, work / f"{name}.int8.tflite", calib, progress=False)
            ours_s = time.perf_counter() - start
            ours = open_runner(str(work / f"{name}.int8.tflite"))
            fp32 = open_runner(str(work / f"{name}.fp32.tflite"))
            reference = open_runner(str(onnx_path)).predict(test)
            ours_out = ours.predict(test)
            theirs_s, agreement, cosine = None, None, None
            if not args.skip_onnx2tf:
                log(f"{name}: onnx2tf's own integer path (slow) ...")
                theirs_path, theirs_s = onnx2tf_integer(onnx_path, calib, work / "onnx2tf")
                theirs_out = open_runner(str(theirs_path)).predict(test)
                agreement = float(np.mean(ours_out.argmax(1) == theirs_out.argmax(1)))
                cosine = float(np.mean(np.sum(ours_out * theirs_out, 1) /
                                       (np.linalg.norm(ours_out, axis=1) * np.linalg.norm(theirs_out, axis=1))))
            top1_vs_fp32 = float(np.mean(ours_out.argmax(1) == reference.argmax(1)))
            # random weights give near-flat logits whose argmax INT8 noise flips: the cosine is the fairer figure
            cos_fp32 = float(np.mean(np.sum(ours_out * reference, 1) /
                                     (np.linalg.norm(ours_out, axis=1) * np.linalg.norm(reference, axis=1))))
            p50 = interleaved_p50_ms({"fp32": (lambda: fp32.run(fp32.example_feeds())),
                                      "int8": (lambda: ours.run(ours.example_feeds()))}, rounds=5)
            sizes = [(work / f"{name}.fp32.tflite").stat().st_size, (work / f"{name}.int8.tflite").stat().st_size]
            rows.append([name, f"{ours_s:.1f}", f"{theirs_s:.1f}" if theirs_s else "skipped",
                         f"{theirs_s / ours_s:.1f}x" if theirs_s else "", "" if agreement is None else f"{agreement:.0%}",
                         "" if cosine is None else f"{cosine:.4f}", f"{top1_vs_fp32:.0%}", f"{cos_fp32:.4f}", f"{p50['fp32']:.2f}",
                         f"{p50['int8']:.2f}", f"{p50['fp32'] / p50['int8']:.2f}x",
                         f"{sizes[0] / 1e6:.1f} / {sizes[1] / 1e6:.1f}"])
            summary.append({"comparison": f"{name}: edgekit vs onnx2tf integer path", "metric": "conversion time",
                            "value": f"{ours_s:.1f} s vs {theirs_s:.1f} s ({theirs_s / ours_s:.1f}x)" if theirs_s else f"{ours_s:.1f} s"})
            summary.append({"comparison": f"{name}: TFLite INT8 vs FP32", "metric": "p50 latency",
                            "value": f"{p50['fp32'] / p50['int8']:.2f}x faster, {sizes[0] / sizes[1]:.1f}x smaller"})
    print("## TFLite full-integer INT8: edgekit vs onnx2tf's own integer path (224x224, this machine)\n")
    print(markdown(rows, ["model", "edgekit s", "onnx2tf s", "speed-up", "top-1 agree (vs onnx2tf)",
                          "cosine (vs onnx2tf)", "top-1 agree (vs FP32)", "cosine (vs FP32)", "FP32 p50 ms", "INT8 p50 ms",
                          "INT8 speed-up", "MB FP32 / INT8"]))
    save_summary("tflite_conversion", summary)


if __name__ == "__main__":
    main()
