"""INT8 fidelity of ViTs with and without the class-token rewrites (edgekit.quantize.onnx_tokens).

For each torchvision ViT (seeded random weights, its zero head given weights, as in the zoo; 128 px
images from the zoo's set): the FP32 ONNX, then edgekit's ORT INT8 (MinMax, every op INT8, no remedy)
and full-integer TFLite INT8 (the CLI's defaults), each once as edgekit quantizes it and once with both
token rewrites switched off in this process; logit cosine against FP32 on 32 held-out images.

    PYTHONPATH=. python benchmarks/bench_vit_tokens.py                 # vit_b_32, ~10 min on 2 cores
    PYTHONPATH=. python benchmarks/bench_vit_tokens.py --only vit_b_32,vit_b_16
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import log, save_summary  # noqa: E402

SIZE = 128


def _fidelities(onnx_path: Path, calib: np.ndarray, held: np.ndarray, work: Path, tag: str) -> dict[str, float]:
    from edgekit.quantize.ort import quantize_ort_workflow
    from edgekit.quantize.tflite import quantize_tflite

    ort = quantize_ort_workflow(onnx_path, work / f"{tag}.int8.onnx", calib, holdout=held, remedies=False,
                                progress=False, log=lambda _: None)
    tflite = quantize_tflite(onnx_path, work / f"{tag}.int8.tflite", calib, holdout=held, write_fp32=False,
                             progress=False)
    return {"ort_cosine": round(ort.fidelity.cosine, 5), "tflite_cosine": round(tflite.fidelity.cosine, 5)}


@contextlib.contextmanager
def _rewrites_off() -> Iterator[None]:
    """Both backends' entry points to the token rewrites switched off, then restored."""
    import edgekit.quantize.ort.quantizer as ort_quantizer
    import edgekit.quantize.tflite.onnx_rewrites as tflite_rewrites

    modules = (ort_quantizer, tflite_rewrites)
    kept = [module.constant_tokens_kept_apart for module in modules]
    for module in modules:
        module.constant_tokens_kept_apart = lambda model, calibration: False
    try:
        yield
    finally:
        for module, original in zip(modules, kept):
            module.constant_tokens_kept_apart = original


def measure(name: str) -> dict[str, Any]:
    import torch

    import zoo
    from bench_parity import calibrated_model

    zoo.SIZE = SIZE
    calib, held = zoo.images(SIZE)
    model = calibrated_model(name, SIZE, calib)
    with tempfile.TemporaryDirectory(prefix=f"vit-tokens-{name}-") as folder:
        work = Path(folder)
        zoo.export(model, torch.zeros(1, 3, SIZE, SIZE), work / "m.onnx", held)
        with_rewrites = _fidelities(work / "m.onnx", calib, held, work, "on")
        with _rewrites_off():
            without = _fidelities(work / "m.onnx", calib, held, work, "off")
    return {"arch": name, "size": SIZE, "with_rewrites": with_rewrites, "without_rewrites": without}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="vit_b_32", help="comma-separated torchvision ViTs")
    args = parser.parse_args()
    rows = []
    for name in args.only.split(","):
        log(f"{name}: quantizing with and without the token rewrites ...")
        measured = measure(name)
        for backend in ("ort", "tflite"):
            for state, key in (("with", "with_rewrites"), ("without", "without_rewrites")):
                rows.append({"comparison": f"{name} {SIZE} px, {backend} INT8 {state} the token rewrites",
                             "metric": "logit cosine vs FP32", "value": measured[key][f"{backend}_cosine"]})
                log(f"{rows[-1]['comparison']}: {rows[-1]['value']}")
    import zoo

    save_summary("vit_tokens", rows, machine=zoo.machine(), commit=zoo.git_commit())


if __name__ == "__main__":
    main()
