"""Content-keyed stage cache: a re-run redoes exactly the stages whose inputs changed.

A stage's key hashes what its step declares it reads (resolved settings, data fingerprints, the
recipe, target profiles, library versions; see :class:`Step`) and the bytes of its input
artifacts. The key is derived from the declaration, never written by hand, so a setting a step
reads cannot be missing from its key. The record lives in the run directory with paths relative
to it, so an interrupted run resumes from the last finished stage and a copied or moved run
folder uses its own artifacts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from edgekit import __version__
from edgekit.atomic import write_text_atomic
from edgekit.manifest import sha256_file

RECORD_NAME = "stages.json"
CHECKPOINTS = Path("artifacts") / "checkpoints"


@dataclasses.dataclass(frozen=True)
class StepContext:
    """What a step may look at: the configuration, where the run lives, and (for training steps)
    the checkpoint folder of this very configuration."""

    config: Any  # PipelineConfig
    run_dir: Path
    log: Callable[[str], None] = logging.getLogger("edgekit.pipeline").info
    targets_dir: str | None = None
    checkpoints: Path | None = None
    variant: str | None = None  # the pruned variant a prune/distill step makes (a ``prune.ratios`` sweep)

    @property
    def artifacts(self) -> Path:
        return self.run_dir / "artifacts"


@dataclasses.dataclass(frozen=True)
class Step:
    """One stage: ``reads(ctx)`` is everything it reads besides its input artifacts (declared next to
    the code that reads it, in ``steps.py``); ``work(ctx, inputs)`` makes its outputs; ``complete(outputs)``
    is False for outputs that record a failure the next run must retry (a device that was unreachable)."""

    name: str
    reads: Callable[[StepContext], dict[str, Any]]
    work: Callable[[StepContext, list[Path]], list[Path]]
    complete: Callable[[list[Path]], bool] = lambda outputs: True


def versions(*packages: str) -> dict[str, str | None]:
    """Installed versions (None when absent) of the libraries that produce an artifact."""
    found: dict[str, str | None] = {}
    for name in packages:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


class StageCache:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.path = run_dir / RECORD_NAME
        records = json.loads(self.path.read_text()) if self.path.exists() else {}
        # a record with absolute paths (edgekit 0.1.0) may point into another run folder: never trust it
        self.records: dict[str, Any] = {name: r for name, r in records.items()
                                        if not any(Path(p).is_absolute() for p in r.get("outputs", []))}

    @staticmethod
    def key(reads: Any, inputs: Iterable[Path] = ()) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({"edgekit": __version__, "reads": reads}, sort_keys=True, default=str).encode())
        for path in inputs:
            digest.update(path.name.encode())
            digest.update(sha256_file(path).encode())
        return digest.hexdigest()

    def is_fresh(self, stage: str, key: str) -> bool:
        record = self.records.get(stage)
        return bool(record and record["key"] == key and all(p.exists() for p in self.outputs(stage)))

    def has_run(self, stage: str) -> bool:
        """Whether the stage ever recorded a result here, also one with no outputs (a bench with no targets)."""
        return stage in self.records

    def outputs(self, stage: str) -> list[Path]:
        return [self.run_dir / p for p in self.records.get(stage, {}).get("outputs", [])]

    def record(self, stage: str, key: str, outputs: Iterable[Path], complete: bool = True) -> None:
        """``complete=False``: the outputs are kept (a later stage reads them) but never fresh, so the
        next run redoes the stage (a failure is not cached as a result)."""
        relative = [Path(p).resolve().relative_to(self.run_dir.resolve()).as_posix() for p in outputs]
        self.records[stage] = {"key": key if complete else f"incomplete:{key}", "outputs": relative}
        write_text_atomic(self.path, json.dumps(self.records, indent=2) + "\n", force=True)

    def clear(self) -> None:
        """``--force``: forget every stage and every training checkpoint."""
        self.records = {}
        if self.path.exists():
            self.path.unlink()
        shutil.rmtree(self.run_dir / CHECKPOINTS, ignore_errors=True)


def checkpoint_dir(run_dir: Path, stage: str, key: str) -> Path:
    """Training checkpoints of one stage key: another configuration's checkpoint is never resumed."""
    return run_dir / CHECKPOINTS / stage / key[:16]


def remove_stale_checkpoints(run_dir: Path, stage: str, keep: Path) -> None:
    """Once a stage finished, the checkpoints of its other keys can only mislead; remove them."""
    folder = run_dir / CHECKPOINTS / stage
    for entry in folder.iterdir() if folder.is_dir() else ():
        if entry != keep:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
