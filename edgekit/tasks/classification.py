"""Image classification: one [N, classes] output; top-1/top-5 with labels, agreement and logit
cosine with the reference (which need no labels)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.datasets import Dataset
from edgekit.errors import EdgekitError
from edgekit.tasks.base import EvalData, Metric, Task, output_cosine


class Classification(Task):
    name = "classification"
    metrics = ("top1", "top5", "agreement", "cosine")
    primary = Metric("top1", higher_is_better=True)
    fidelity = Metric("agreement", higher_is_better=True)
    formats = ("folder", "array", "builtin")  # class sub-folders, .npy/.npz with y, builtin:digits

    def targets_of(self, dataset: Dataset, labels: np.ndarray) -> np.ndarray | None:
        kind = getattr(dataset, "task", None)
        if kind is not None:  # its "labels" are sample indices, not classes
            raise EdgekitError(f"{dataset.source}: {kind} annotations; the classification task needs class labels "
                               f"(pass --task {kind})")
        return labels if dataset.labels is not None else None

    def check_outputs(self, path: Path, runner: Any) -> None:
        """Top-k ranks along axis 1 of the first output: it must be [N, classes]."""
        if not runner.outputs or len(runner.outputs[0].shape) != 2:
            shape = runner.outputs[0].shape if runner.outputs else "none"
            raise EdgekitError(f"{path}: output shape {shape}; the classification task needs a [N, classes] output")

    def check_predictions(self, path: Path, outputs: np.ndarray, data: EvalData) -> None:
        if data.targets is not None and int(data.targets.max()) >= outputs.shape[1]:
            raise EdgekitError(f"{data.source}: has class index {int(data.targets.max())} but {path} outputs "
                               f"{outputs.shape[1]} classes (wrong data set or model?)")

    def score(self, outputs: np.ndarray, data: EvalData, reference: np.ndarray | None) -> dict[str, float | None]:
        scores: dict[str, float | None] = dict.fromkeys(self.metrics)
        predicted = np.argmax(outputs, 1)
        if data.targets is not None:
            y = data.targets
            scores["top1"] = _percent(predicted == y)
            top5 = np.argsort(-outputs, axis=1)[:, :min(5, outputs.shape[1])]
            scores["top5"] = _percent(np.any(top5 == y[:, None], axis=1))
        if reference is not None:
            scores["agreement"] = _percent(predicted == np.argmax(reference, 1))
            scores["cosine"] = round(output_cosine(outputs, reference), 6)
        return scores

    def outcomes(self, outputs: np.ndarray, data: EvalData, reference: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per image: top-1 correct (with labels), top-1 equal to the reference's (with a reference)."""
        predicted = np.argmax(outputs, 1)
        found = {}
        if data.targets is not None:
            found["top1"] = predicted == data.targets
        if reference is not None:
            found["agreement"] = predicted == np.argmax(reference, 1)
        return found


def _percent(hits: np.ndarray) -> float:
    return round(100.0 * float(np.mean(hits)), 3)
