"""What the training loop reads: edgekit data sources as torch Datasets, and the cached teacher."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.data import open_dataset


class TorchData:
    """A torch Dataset over an edgekit data source, decoded lazily (folders never sit in memory).

    Items are ``(x, y, index)``: the index lets :class:`TeacherCache` find an image's logits.
    """

    def __init__(self, source: str | Path, recipe: Any) -> None:
        self.dataset = open_dataset(source, recipe)
        self.name = str(source)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        import torch

        x, y = self.dataset.get(index)
        return torch.from_numpy(x), y, index


class IndexedData:
    """Any map-style dataset of ``(x, y)`` (synthetic tensors, a user's own) with the index appended."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        self.name = getattr(dataset, "name", type(dataset).__name__)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        x, y = self.dataset[index][:2]
        return x, int(y), index


def as_dataset(source: Any, recipe: Any) -> TorchData | IndexedData | None:
    """A data source name (resolved with ``recipe``), a Dataset object, or None."""
    if source is None:
        return None
    if isinstance(source, (str, Path)):
        return TorchData(source, recipe)
    return IndexedData(source)


class TeacherCache:
    """Teacher logits computed once per training image and reused every later epoch.

    Valid because edgekit recipes are deterministic (resize, crop, normalise; no random
    augmentation): an image always becomes the same tensor, so the frozen teacher always gives
    the same logits. Kept in host memory: ``images x classes x 4`` bytes (1.28 M ImageNet images:
    5 GB), hence opt-in. Under torchrun each rank fills the rows its sampler hands it.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.logits: Any = None
        self.filled: Any = None

    def __call__(self, teacher: Any, x: Any, index: Any) -> Any:
        import torch

        if self.logits is None:
            out = teacher(x).float()
            self.logits = torch.zeros(self.size, out.shape[1])
            self.filled = torch.zeros(self.size, dtype=torch.bool)
            self._store(index, out)
            return out
        missing = ~self.filled[index]
        if missing.any():
            rows = missing.nonzero().flatten()
            self._store(index[rows], teacher(x[rows.to(x.device)]).float())
        return self.logits[index].to(x.device, non_blocking=True)

    def _store(self, index: Any, logits: Any) -> None:
        self.logits[index] = logits.detach().cpu()
        self.filled[index] = True
