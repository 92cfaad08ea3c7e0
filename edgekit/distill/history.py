"""What a training run did, as a type: the CLI, the pipeline and the manifest read the same fields."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class TrainHistory:
    """Per-epoch records, the best validation score (top-1 for classification, ``val_metric`` for
    other tasks: mAP50-95, mIoU; None without validation data) and where and how the run went (device resolved from ``auto``, processes, precision, memory format, workers)."""

    epochs: list[dict[str, Any]]
    best_val_top1: float | None
    device: str
    processes: int
    amp: str | None
    channels_last: bool
    workers: int
    cache_teacher: bool
    val_metric: str = "top1"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def manifest_stage(self, stage: str, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """The manifest entry of a ``train`` or ``distill`` stage: what was asked, then what happened
        (the resolved ``device`` and ``amp`` replace the requested ``auto``/None)."""
        setup = {k: v for k, v in self.as_dict().items() if k not in ("epochs", "best_val_top1", "val_metric")}
        return {"stage": stage, **settings, **extra, "history": self.epochs,
                f"best_val_{self.val_metric}": self.best_val_top1, **setup}
