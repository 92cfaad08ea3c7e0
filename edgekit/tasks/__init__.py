"""The task registry: what a model's outputs mean and how they are scored, one module per task.

To add a task: write ``edgekit/tasks/<name>.py`` with a :class:`Task`
subclass (its output check, data formats, metrics, primary and fidelity metric) and add it to
:data:`TASKS` below. The evaluation driver, the CLI and the pipeline take the name.
"""
from __future__ import annotations

from edgekit.errors import EdgekitError
from edgekit.tasks.base import EvalData, Metric, Task, data_format, output_cosine, top1_agreement
from edgekit.tasks.classification import Classification
from edgekit.tasks.detection import Detection
from edgekit.tasks.segmentation import Segmentation

TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Detection(), Segmentation())}
DEFAULT_TASK = "classification"


def get_task(name: str | Task, label: str = "--task") -> Task:
    """The registered task called ``name`` (a Task passes through); one line naming ``label`` otherwise."""
    if isinstance(name, Task):
        return name
    task = TASKS.get(name)
    if task is None:
        raise EdgekitError(f"{label}: {name!r} is not one of {', '.join(sorted(TASKS))}")
    return task


__all__ = ["DEFAULT_TASK", "TASKS", "EvalData", "Metric", "Task", "data_format", "get_task", "output_cosine", "top1_agreement"]
