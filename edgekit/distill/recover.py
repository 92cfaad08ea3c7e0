"""Recovering a pruned model's accuracy by distillation from the unpruned teacher: the settings and
the two ways it runs (after pruning; one epoch between pruning steps), shared by ``edgekit prune``
and the pipeline's prune and distill stages."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from edgekit.distill.history import TrainHistory
from edgekit.distill.train import fit

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RecoverSettings:
    """How the student is trained (``edgekit prune`` flags, the pipeline's ``distill:`` section)."""

    epochs: int = 5
    lr: float = 2e-3
    batch_size: int = 64
    alpha: float = 0.7
    temperature: float = 4.0
    optimizer: str = "adamw"
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    amp_dtype: str | None = None
    channels_last: bool | None = None
    workers: int = 0
    cache_teacher: bool = False
    task: str = "classification"  # the loss and validation score (edgekit.distill.objectives)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recover(student: Any, teacher: Any, train: str, recipe: str, settings: RecoverSettings, *,
            val: str | None = None, checkpoint_dir: str | Path | None = None,
            log: Callable[[str], None] = _log.info) -> TrainHistory:
    """Distil ``teacher`` into ``student`` in place for ``settings.epochs`` (best validation weights kept)."""
    return fit(student, train, recipe, teacher=teacher, val_source=val, checkpoint_dir=checkpoint_dir, log=log,
               **settings.as_dict())


def between_steps(teacher: Any, train: str, recipe: str, settings: RecoverSettings,
                  log: Callable[[str], None] = _log.info) -> Callable[[Any, int], None]:
    """One epoch of distillation after each pruning step but the last, so later steps rank channels
    of a model that has recovered (no checkpoints: each epoch trains a different shape)."""
    one_epoch = dataclasses.replace(settings, epochs=1)

    def fine_tune(student: Any, step: int) -> None:
        log(f"recovering after pruning step {step}: one epoch of distillation")
        fit(student, train, recipe, teacher=teacher, log=log, **one_epoch.as_dict())

    return fine_tune


def distill_stage(history: TrainHistory, settings: RecoverSettings, teacher: str) -> dict[str, Any]:
    """The manifest's ``distill`` stage, the same from the CLI and the pipeline."""
    return history.manifest_stage("distill", settings.as_dict(), teacher=teacher)
