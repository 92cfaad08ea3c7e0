"""Model adapters: other libraries' models wrapped so they answer in an edgekit task's layout.

A torchvision detector or segmenter returns Python structures (a list of dicts of boxes, an
``OrderedDict`` of masks) made by code that resizes, normalises, filters and suppresses: nothing an
INT8 runtime can run or a host can score alike. Its adapters keep the network and its own decoding
and return the one dense tensor the task reads (:mod:`edgekit.tasks`).
"""
from __future__ import annotations

from typing import Any


def torchvision_task_model(name: str, kwargs: dict[str, Any]) -> Any | None:
    """The adapted module for a torchvision detection or segmentation model name, else None (a
    classification name, or none at all: the caller says which)."""
    from edgekit.adapters.torchvision_detection import detection_model, is_detection_name
    from edgekit.adapters.torchvision_segmentation import is_segmentation_name, segmentation_model

    if is_detection_name(name):
        return detection_model(name, kwargs)
    if is_segmentation_name(name):
        return segmentation_model(name, kwargs)
    return None


__all__ = ["torchvision_task_model"]
