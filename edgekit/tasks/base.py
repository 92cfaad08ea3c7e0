"""What a task is: the one place that knows what a model of that kind outputs and how it is scored.

The evaluation driver (:mod:`edgekit.evaluate`) decodes the data once through ``Task.prepare``,
runs every artifact through ``Task.predict`` and hands the outputs to ``Task.score``; it knows
nothing about classes, boxes or masks. A new task (detection: boxes and mAP; segmentation: masks
and mIoU) is one module with one ``Task`` subclass plus one entry in :data:`edgekit.tasks.TASKS`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data import Recipe, open_dataset, sample_indices
from edgekit.data.datasets import Dataset, iter_batches
from edgekit.errors import EdgekitError


@dataclasses.dataclass(frozen=True)
class Metric:
    """A figure budgets and reports can rank by: its key in the eval document and its direction."""

    name: str
    higher_is_better: bool = True


@dataclasses.dataclass(frozen=True)
class EvalData:
    """Evaluation data decoded once and shared by every artifact: float NCHW ``inputs`` and the
    task's ground truth (``targets``: class indices, boxes, masks; None when the data is unlabelled)."""

    source: str
    recipe: str
    inputs: np.ndarray
    targets: Any | None
    skipped: tuple[str, ...] = ()

    @property
    def num_samples(self) -> int:
        return int(len(self.inputs))

    @property
    def labelled(self) -> bool:
        return self.targets is not None


class Task:
    """One kind of model. Subclasses set the class attributes and implement ``check_outputs``,
    ``targets_of`` and ``score``; the rest has working defaults for single-image-input models."""

    name: str = ""
    metrics: tuple[str, ...] = ()  # every key ``score`` returns, in document order
    primary: Metric = Metric("")  # with labels
    fidelity: Metric = Metric("")  # without labels: how faithfully a variant reproduces the reference
    formats: tuple[str, ...] = ()  # edgekit.data.open_dataset kinds it reads (see data_format)

    def primary_metric(self, labelled: bool) -> Metric:
        """What a budget or a report ranks by on this data."""
        return self.primary if labelled else self.fidelity

    # -- data --------------------------------------------------------------------------------
    def prepare(self, data: str, recipe: Recipe, *, num_samples: int | None = None, seed: int = 0,
                skip_bad: bool = False) -> EvalData:
        """Decode ``data`` once (a seeded sample when ``num_samples``) into what every artifact is fed."""
        kind = data_format(data)
        if kind not in self.formats:
            raise EdgekitError(f"{data}: a {kind} data source; the {self.name} task reads {', '.join(self.formats)}")
        dataset = open_dataset(data, recipe)
        indices = sample_indices(dataset, num_samples, seed)
        skipped: list[str] = []
        inputs, labels = [], []
        for x, y in iter_batches(dataset, indices, 256, skip_bad=skip_bad, skipped=skipped):
            inputs.append(x)
            labels.append(y)
        if not inputs:
            raise EdgekitError(f"{data}: no usable samples")
        return EvalData(str(data), recipe.name, np.concatenate(inputs),
                        self.targets_of(dataset, np.concatenate(labels)), tuple(skipped))

    def targets_of(self, dataset: Dataset, labels: np.ndarray) -> Any | None:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- models ------------------------------------------------------------------------------
    def check_inputs(self, path: Path, runner: Any) -> None:
        """One float (or quantized) image input: anything else would be fed the wrong tensor."""
        if len(runner.inputs) != 1:
            raise EdgekitError(f"{path}: the model has {len(runner.inputs)} inputs; eval needs a model with one image input")
        info = runner.inputs[0]
        if info.dtype.kind != "f" and not info.quantized:
            raise EdgekitError(f"{path}: input {info.name!r} is {info.dtype}; eval feeds float (or quantized int8) images")

    def check_outputs(self, path: Path, runner: Any) -> None:  # pragma: no cover - abstract
        """The outputs this task can score; one line naming ``path`` otherwise."""
        raise NotImplementedError

    def predict(self, runner: Any, data: EvalData) -> Any:
        """The model's outputs on ``data`` (a detector would return every output; one output here)."""
        return runner.predict(data.inputs)

    def check_predictions(self, path: Path, outputs: Any, data: EvalData) -> None:
        """Outputs that cannot belong to this data (a class index past the last class): one line."""

    def score(self, outputs: Any, data: EvalData, reference: Any | None) -> dict[str, float | None]:  # pragma: no cover
        """Every name in ``metrics``: ground-truth metrics when ``data.labelled``, fidelity metrics
        against ``reference``'s outputs when given; None for what cannot be measured."""
        raise NotImplementedError

    def outcomes(self, outputs: Any, data: EvalData, reference: Any | None) -> dict[str, np.ndarray]:
        """Per-item booleans for the metrics that are proportions (image right or wrong), in data
        order, so differences between variants get paired intervals; none by default."""
        return {}

    agreement_kind = "top-1"
    decodes_in_graph = False  # outputs end in decode arithmetic that INT8 may break (edgekit.quantize.ort.head)

    def fidelity_pair(self, outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
        """(cosine, agreement %) of a variant's outputs against the reference's: what quantization
        checks after every conversion and its remedies try to raise."""
        return output_cosine(outputs, reference), top1_agreement(outputs, reference)

    def summary(self, scores: dict[str, float | None]) -> str:
        """One line of the figures that were measured, in document order."""
        return "  ".join(f"{name} {scores[name]:g}" for name in self.metrics if scores.get(name) is not None)


def data_format(source: str) -> str:
    """The kind of data source open_dataset resolves ``source`` to: builtin, array, yolo (an
    Ultralytics data YAML, ``data.yaml#train`` for a split), coco (a COCO JSON) or folder."""
    text = str(source)
    if text.startswith("builtin:"):
        return "builtin"
    suffix = Path(text.partition("#")[0]).suffix.lower()
    return {".npy": "array", ".npz": "array", ".yaml": "yolo", ".yml": "yolo", ".json": "coco"}.get(suffix, "folder")


def top1_agreement(outputs: np.ndarray, reference: np.ndarray) -> float:
    """% of samples whose flattened output has its largest value where the reference's has."""
    a = np.asarray(outputs).reshape(len(outputs), -1).argmax(1)
    return float(np.mean(a == np.asarray(reference).reshape(len(reference), -1).argmax(1)) * 100)


def output_cosine(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Mean per-sample cosine between float outputs and the reference's: 1.0 for an exact copy, a
    continuous measure of what quantization changed even where no top-1 prediction flips."""
    a = np.asarray(outputs, np.float64).reshape(len(outputs), -1)
    b = np.asarray(reference, np.float64).reshape(len(reference), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    same = np.all(a == b, axis=1)  # two zero rows are identical, not undefined
    cosine = np.where(same, 1.0, np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0))
    return float(np.mean(np.clip(cosine, -1.0, 1.0)))


def annotations_of(dataset: Dataset, labels: np.ndarray, task: str) -> list[Any] | None:
    """The ground truth of the decoded samples (their labels are sample indices for annotated data);
    None for images without annotations, one line for annotations of the other task."""
    kind = getattr(dataset, "task", None)
    if kind is None:
        return None
    if kind != task:
        raise EdgekitError(f"{dataset.source}: {kind} annotations; the {task} task needs {task} data")
    return [dataset.annotation(int(i)) for i in labels]
