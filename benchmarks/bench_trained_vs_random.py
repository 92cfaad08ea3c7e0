"""Does a random-weight net with BatchNorm statistics set on images quantize like a trained one?

The zoo (benchmarks/zoo.py) has no trained weights to measure (nothing can be downloaded here), so it
quantizes seeded random nets whose BatchNorm statistics are set on images. This script checks that
stand-in where a trained net *can* be had: each architecture is trained on scikit-learn's digits
(the demo's recipe: 32 px, 10 classes; the zoo's ``train_on_digits``, 4 epochs) and compared with the same architecture, same seed,
untrained but with its BatchNorm statistics set on the same images as the zoo does. For both:
  * the input-noise cosine: FP32 output under one 8-bit step of input rounding (zoo.noise_floor);
  * the rounding floor: the same noise at the input of every Conv and Linear (zoo.rounding_floor);
  * edgekit's ORT INT8 (the zoo's ORT stage: the CLI's workflow, remedies included): logit cosine
    and top-1 agreement against FP32 on held-out digits;
  * how discriminative the net is: mean cosine between different images' logits (a net that maps
    every image to one output has a perfect INT8 cosine and means nothing).

    PYTHONPATH=. python benchmarks/bench_trained_vs_random.py            # ~30 min on 2 cores
    PYTHONPATH=. python benchmarks/bench_trained_vs_random.py --only resnet18_small
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, log, markdown, save_summary  # noqa: E402

SIZE = 32
CLASSES = 10
IMAGES = 64
ARCHITECTURES = ("resnet18_small", "mobilenet_v2", "mnasnet1_0")


def build(name: str, calib: np.ndarray) -> Any:
    """Seeded random weights, BatchNorm statistics on ``calib`` (the zoo's stand-in for training)."""
    import torch
    from bench_parity import calibrated_model, set_batchnorm_statistics

    if name == "resnet18_small":  # the demo's model: torchvision's ResNet-18 with a 32 px stem
        from edgekit.zoo import resnet18_small

        torch.manual_seed(0)
        return set_batchnorm_statistics(resnet18_small(CLASSES), calib)
    return calibrated_model(name, SIZE, calib, num_classes=CLASSES)


def digits(split: str, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    from edgekit.data import load_all, open_dataset, sample_indices

    data = open_dataset(f"builtin:digits/{split}", "digits")
    x, y, _ = load_all(data, sample_indices(data, count, seed=0) if count else None)
    return x.astype(np.float32), y


def similarity(logits: np.ndarray) -> float:
    """Mean cosine between the logits of two different images."""
    unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * n - n))


def measure(model: Any, calib: np.ndarray, held_out: np.ndarray, work: Path) -> dict[str, Any]:
    import torch
    import zoo

    floor = zoo.rounding_floor(model, calib, held_out)
    zoo.export(model, torch.zeros(1, 3, SIZE, SIZE), work / zoo.FP32, held_out)
    runner = zoo.open_runner_2(work / zoo.FP32)
    reference = runner.predict(held_out)
    ort = zoo.ort_stage(work / zoo.FP32, work, calib, held_out, reference)
    return {"input_noise_cosine": round(zoo.noise_floor(runner, held_out, calib, reference), 6),
            "rounding_floor": round(floor, 6), "ort_cosine": ort["cosine"], "ort_agree": ort["agree"],
            "logit_similarity": round(similarity(reference), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="comma-separated architectures (default: %s)" % ",".join(ARCHITECTURES))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    import torch
    import zoo

    torch.set_num_threads(2)
    calib, _ = digits("train", IMAGES)
    held_out, _ = digits("test", IMAGES)
    rows: list[dict[str, Any]] = []
    for name in args.only.split(",") if args.only else ARCHITECTURES:
        for weights in ("random + BN statistics", "trained"):
            start = time.time()
            model = build(name, calib)
            top1 = zoo.train_on_digits(model, "digits") if weights == "trained" else None
            with tempfile.TemporaryDirectory() as tmp:
                row = {"arch": name, "weights": weights, "val_top1": top1, **measure(model, calib, held_out, Path(tmp))}
            rows.append(row)
            log(f"{name} {weights}: {row} ({time.time() - start:.0f} s)")
    keys = ["input_noise_cosine", "rounding_floor", "ort_cosine", "ort_agree", "logit_similarity", "val_top1"]
    print(markdown([[r["arch"], r["weights"], *[r[k] for k in keys]] for r in rows], ["arch", "weights", *keys]))
    save_summary("trained_vs_random", [
        {"comparison": f"{r['arch']} {r['weights']}", "metric": key, "value": r[key]} for r in rows for key in keys
        if r[key] is not None], machine=zoo.machine(), commit=zoo.git_commit())
    print(f"rows in {RESULTS / 'trained_vs_random.json'}")


if __name__ == "__main__":
    main()
