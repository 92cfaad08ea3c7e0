"""Resumable training that resumes only the *same* training.

``last.pt`` holds plain state dicts, numbers, strings and lists, so it loads with
``torch.load(weights_only=True)`` (no pickled code runs), and a ``config`` record: everything that
determines the training (hyperparameters, seed, data sources, recipe, the student's and teacher's
parameter shapes). A checkpoint whose record differs from the current run's is ignored with one
line saying what changed: changing the learning rate must not "resume" a finished run and train
nothing, and a different prune ratio must not end in a size-mismatch traceback.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import first_line

FORMAT = 1


def shapes(model: Any) -> list[list[Any]] | None:
    """``[[name, [dims]], ...]`` of the state dict: a pruned model differs here."""
    if model is None:
        return None
    return [[name, list(t.shape)] for name, t in model.state_dict().items() if hasattr(t, "shape")]


def fingerprint(**fields: Any) -> str:
    """The canonical JSON of ``fields`` (what is stored in, and compared with, a checkpoint)."""
    return json.dumps({"format": FORMAT, **fields}, sort_keys=True, default=str)


def describe_change(saved: str, current: str) -> str:
    """A short human account of what differs between two fingerprints."""
    try:
        old, new = json.loads(saved), json.loads(current)
    except (TypeError, ValueError):
        return "unreadable configuration record"
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key in ("student", "teacher"):
            changes.append(f"{key} {'added' if a is None else 'removed' if b is None else 'parameter shapes'}")
        elif key == "recipe":
            changes.append("recipe")
        else:
            changes.append(f"{key} {a!r} -> {b!r}")
    return ", ".join(changes) or "unknown difference"


def load_matching(path: Path | None, config: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it was written by this very configuration, else None (and one log line)."""
    import torch

    if path is None or not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn, foreign or pre-weights_only file: start fresh
        log(f"not resuming from {path}: it cannot be read safely ({first_line(exc, 120)}); training from the start")
        return None
    saved = state.get("config") if isinstance(state, dict) else None
    if saved is None:
        log(f"not resuming from {path}: it has no configuration record (an older edgekit); training from the start")
        return None
    if saved != config:
        log(f"not resuming from {path}: written for another configuration ({describe_change(saved, config)}); "
            "training from the start")
        return None
    return state

