"""Prune, with the training data put to use: real batches for Taylor importance and, between
pruning steps, a recovery epoch. One function for ``edgekit prune`` and the pipeline's prune stage."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from edgekit.prune.report import PruneReport, PruneSettings
from edgekit.prune.structured import prune_model

_log = logging.getLogger(__name__)

TAYLOR_BATCHES = 4  # a few real batches: Taylor importance averages gradients, it does not train
TAYLOR_BATCH_SIZE = 32


def reads_train_data(settings: PruneSettings, recovering: bool) -> bool:
    """Whether pruning with ``settings`` reads the training data (the pipeline's cache key says so)."""
    return settings.importance == "taylor" or (recovering and settings.steps > 1)


def taylor_batches(source: str, recipe: str, seed: int = 0) -> Callable[[], Iterable[tuple[Any, Any]]]:
    """A seeded, class-stratified sample of ``source`` as ``(x, y)`` torch batches (y = -1 unlabelled),
    decoded once and replayed at every pruning step."""
    import torch

    from edgekit.data import load_recipe, open_dataset, sample_indices
    from edgekit.data.datasets import iter_batches

    dataset = open_dataset(source, load_recipe(recipe))
    indices = sample_indices(dataset, TAYLOR_BATCHES * TAYLOR_BATCH_SIZE, seed)
    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in iter_batches(dataset, indices, TAYLOR_BATCH_SIZE)]
    return lambda: batches


def prune_step(model: Any, example: Any, settings: PruneSettings, *, train: str | None = None,
               recipe: str | None = None, recovery: Callable[[Any, int], None] | None = None,
               progress: Callable[[str], None] | None = _log.info) -> PruneReport:
    """Prune ``model`` in place. With ``train`` (and its ``recipe``) Taylor importance ranks channels on
    real batches instead of random inputs; ``recovery`` runs between steps (see distill.between_steps)."""
    batches = taylor_batches(train, recipe) if train and recipe and settings.importance == "taylor" else None
    return prune_model(model, example, settings, batches=batches,
                       between_steps=recovery if settings.steps > 1 else None, progress=progress)
