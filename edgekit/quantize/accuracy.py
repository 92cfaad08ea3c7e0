"""The accuracy the quantization searches measure (``auto``, ``accuracy_budget``): top-1 on labelled data.

Its own module, outside ``quantize.ort``, because ``edgekit.evaluate`` imports the ORT settings
(for the host-numerics warning): evaluating from inside ``quantize.ort`` would close a cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

Accuracy = Callable[[Path], float]


def accuracy_on(data: str, recipe: str, task: str = "classification") -> Accuracy:
    """The task's primary metric (top-1 %, mAP50-95, mIoU) of a model file on ``data`` prepared by
    ``recipe``: what --accuracy-budget counts in points."""
    from edgekit.evaluate import evaluate
    from edgekit.tasks import get_task

    metric = get_task(task).primary.name
    return lambda path: float(evaluate(path, data, recipe, task=task)[metric])
