"""The accuracy the quantization searches measure (``auto``, ``accuracy_budget``): top-1 on labelled data.

Its own module, outside ``quantize.ort``, because ``edgekit.evaluate`` imports the ORT settings
(for the host-numerics warning): evaluating from inside ``quantize.ort`` would close a cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

Accuracy = Callable[[Path], float]


def accuracy_on(data: str, recipe: str) -> Accuracy:
    """Top-1 (%) of a model file on ``data`` prepared by ``recipe``."""
    from edgekit.evaluate import evaluate

    return lambda path: float(evaluate(path, data, recipe)["top1"])
