"""Accuracy of any artifact (.onnx or .tflite) on labelled data, through the same runner as benchmarks.

Top-1 and top-5 say how good a model is; *agreement* (how often its top-1 equals the FP32
reference's top-1) says how faithfully a compressed model reproduces the original, and works on
unlabelled data too.
"""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import load_recipe, open_dataset, sample_indices
from edgekit.data.datasets import iter_batches
from edgekit.errors import EdgekitError, first_line
from edgekit.quantize.ort.settings import host_numerics_warning
from edgekit.runtime.verify import check_model_file, verify_tflite
from edgekit.runtime.device_runner import isa_flags

SCHEMA = "edgekit.eval/1"
MAX_THREADS = 1024  # more is a typo, and would make the runtimes try to start that many threads


def predict_logits(artifact: str | Path, inputs: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Float outputs of ``artifact`` for float NCHW ``inputs`` (quantized I/O handled by the runner)."""
    from edgekit.runtime import open_runner

    path = Path(artifact)
    if not path.is_file():
        raise EdgekitError(f"{path}: artifact not found")
    if path.suffix.lower() != ".onnx":  # what open_runner gives to the TFLite interpreter
        verify_tflite(path, invoke=True, any_name=True)  # a corrupt flatbuffer must crash a child, not us
    try:
        runner = open_runner(str(path), threads)
    except Exception as exc:
        raise EdgekitError(f"{path}: cannot be loaded ({first_line(exc)})") from exc
    _check_classifier(path, runner)
    expected = runner.inputs[0].shape
    got = list(inputs.shape)
    if runner.layout == "NHWC" and len(got) == 4:
        got = [got[0], got[2], got[3], got[1]]
    if any(e is not None and e != g for e, g in zip(expected[1:], got[1:])):
        raise EdgekitError(f"{path}: model input has shape {expected}, the data makes {got} (check --recipe)")
    return runner.predict(inputs)


def _check_classifier(path: Path, runner: Any) -> None:
    """Top-k needs one float (or quantized) image input and one [N, classes] output: anything else would
    be fed the wrong tensor or ranked along the wrong axis, so it is named instead."""
    if len(runner.inputs) != 1:
        raise EdgekitError(f"{path}: the model has {len(runner.inputs)} inputs; eval needs a model with one image input")
    info = runner.inputs[0]
    if info.dtype.kind != "f" and not info.quantized:
        raise EdgekitError(f"{path}: input {info.name!r} is {info.dtype}; eval feeds float (or quantized int8) images")
    if not runner.outputs or len(runner.outputs[0].shape) != 2:
        shape = runner.outputs[0].shape if runner.outputs else "none"
        raise EdgekitError(f"{path}: output shape {shape}; eval measures top-k and needs a [N, classes] output")


def evaluate(
    artifact: str | Path,
    data: str,
    recipe: str,
    *,
    reference: str | Path | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    threads: int | None = None,
    skip_bad: bool = False,
) -> dict[str, Any]:
    """Top-1/top-5 (percent) on ``data`` and agreement with ``reference``; an edgekit.eval/1 document."""
    check_model_file(artifact, "artifact")  # cheap checks before preparing any data
    if reference is not None:
        check_model_file(reference, "reference")
    if threads is not None and not 1 <= threads <= MAX_THREADS:
        raise EdgekitError(f"--threads: must be between 1 and {MAX_THREADS}, got {threads}")
    recipe_obj = load_recipe(recipe)
    dataset = open_dataset(data, recipe_obj)
    indices = sample_indices(dataset, num_samples, seed)
    inputs, labels = [], []
    for x, y in iter_batches(dataset, indices, 256, skip_bad=skip_bad):
        inputs.append(x)
        labels.append(y)
    if not inputs:
        raise EdgekitError(f"{data}: no usable samples")
    x_all, y_all = np.concatenate(inputs), np.concatenate(labels)
    logits = predict_logits(artifact, x_all, threads)
    result: dict[str, Any] = {
        "schema": SCHEMA, "artifact": Path(artifact).name, "path": str(artifact), "data": data,
        "recipe": recipe_obj.name, "num_samples": int(len(x_all)), "top1": None, "top5": None,
        "reference": None, "agreement": None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "measured_on": {"machine": platform.machine(), "isa_flags": isa_flags()},
        "warning": host_numerics_warning(artifact),
    }
    if dataset.labels is not None and int(y_all.max()) >= logits.shape[1]:
        raise EdgekitError(f"{data}: has class index {int(y_all.max())} but {artifact} outputs {logits.shape[1]} "
                           "classes (wrong data set or model?)")
    if dataset.labels is not None:
        result["top1"] = round(100.0 * float(np.mean(np.argmax(logits, 1) == y_all)), 3)
        k = min(5, logits.shape[1])
        top5 = np.argsort(-logits, axis=1)[:, :k]
        result["top5"] = round(100.0 * float(np.mean(np.any(top5 == y_all[:, None], axis=1))), 3)
    if reference is not None:
        ref_logits = predict_logits(reference, x_all, threads)
        result["reference"] = Path(reference).name
        result["agreement"] = round(100.0 * float(np.mean(np.argmax(logits, 1) == np.argmax(ref_logits, 1))), 3)
    return result
