"""What structured pruning is asked to do and what it did, as types: the CLI, the pipeline and the
manifest read the same fields instead of guessing dictionary keys."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    """One pruning request (``edgekit prune`` flags, the pipeline's ``prune:`` section)."""

    ratio: float | None = None
    target_macs: float | None = None
    importance: str = "l1"
    global_pruning: bool = False
    round_to: int | None = 8
    protect: tuple[str, ...] = ()
    steps: int = 1


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What one pruning run did: MACs and parameters before and after, every step, every layer's width."""

    settings: PruneSettings
    steps: list[dict[str, int]]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    layers: dict[str, dict[str, list[int] | None]]
    prunable_share: float | None = None  # of the conv/linear MACs, those in layers whose outputs may narrow
    attention: str | None = None         # "multi-head" or "windowed" (MLP widths only), see prune/attention.py
    auto_protected: list[str] = dataclasses.field(default_factory=list)  # dependency search diverged (divergence.py)
    unmapped_protected: list[str] = dataclasses.field(default_factory=list)  # pruning their group failed (probe.py)

    def manifest_stage(self) -> dict[str, Any]:
        """The manifest's ``prune`` stage (``macs``/``params`` are what the report reads)."""
        s = self.settings
        return {
            "stage": "prune", "importance": s.importance, "ratio": s.ratio, "target_macs": s.target_macs,
            "global_pruning": s.global_pruning, "round_to": s.round_to, "protected": list(s.protect),
            "steps": self.steps, "macs_before": self.macs_before, "macs_after": self.macs_after,
            "params_before": self.params_before, "params_after": self.params_after,
            "macs": self.macs_after, "params": self.params_after, "layers": self.layers,
            "prunable_macs_share": self.prunable_share, "attention": self.attention,
            "auto_protected": self.auto_protected, "unmapped_protected": self.unmapped_protected,
        }

    def summary(self) -> str:
        return (f"MACs {self.macs_before / 1e6:.1f}M -> {self.macs_after / 1e6:.1f}M "
                f"({self.macs_after / self.macs_before:.1%}), params {self.params_before / 1e6:.2f}M -> "
                f"{self.params_after / 1e6:.2f}M"
                + (f"; {self.prunable_share:.0%} of the conv/linear MACs were prunable" if self.prunable_share is not None else "")
                + (f"; {len(self.auto_protected)} layer(s) protected automatically (pruning dependencies without end: "
                   f"{first_names(self.auto_protected)})"
                   if self.auto_protected else "")
                + (f"; {len(self.unmapped_protected)} layer(s) kept whole (Torch-Pruning cannot map their channels: "
                   f"{first_names(self.unmapped_protected)})"
                   if self.unmapped_protected else ""))


def first_names(names: list[str], shown: int = 3) -> str:
    """A list of layer names short enough for one line: the first few, then '...'."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
