"""Faithful INT8 by default: when fidelity is below the threshold, try what a specialist would.

In order, each on top of the best so far: per-channel weights (if off), Percentile then Entropy
calibration (an outlier activation no longer sets the whole range), 7-bit weights (reduce_range),
mean min/max ranges and INT8 for Conv/MatMul/Gemm only (NNCF's range estimator and its scope: what
kept more fidelity than edgekit on EfficientNet and ConvNeXt in benchmarks/bench_nncf.py, where the
SE gates, SiLU/GELU, LayerNorm and residual Adds lose most in INT8), then the most sensitive layers
in float (``sensitivity.meet_accuracy_budget``, driven by the fidelity shortfall instead of labels). The first candidate that meets the threshold wins, else the
most faithful one. Nothing runs when the first quantization is already faithful.

The cost is bounded by a count, not a clock, so that the same inputs give the same model: at most
six settings candidates, and at most a quarter of the weighted layers (3 at least) in float, since
more defeats INT8 (1, 3, 7, ... of them: a handful of quantizations). Measured on MobileNet-V2
(random weights, BatchNorm statistics set on images) the uncapped search took 154 s for 10
candidates and still missed the threshold with all 53 weighted layers in float (cosine 0.976 ->
0.987): its residual Adds and input stay INT8.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError
from edgekit.quantize.fidelity import Fidelity
from edgekit.quantize.ort.sensitivity import meet_accuracy_budget
from edgekit.quantize.ort.settings import OrtQuantSettings

_log = logging.getLogger(__name__)

Quantize = Callable[[OrtQuantSettings, list[str], Path], Path]  # (settings, nodes in float, scratch path) -> path
Measure = Callable[[Path], Fidelity]
HISTOGRAM_SAMPLES = 16  # ORT's Percentile/Entropy calibrators keep every activation of every sample in memory:
# MobileNet-V2 at 224x224 on 96 samples grew to 6.3 GB here, so a remedy calibrates on this many
MAX_FLOAT_FRACTION = 0.25
MIN_FLOAT_LAYERS = 3


@dataclasses.dataclass
class Candidate:
    remedy: str
    settings: OrtQuantSettings
    excluded: list[str]
    path: Path
    fidelity: Fidelity

    def row(self) -> dict[str, Any]:
        return {"remedy": self.remedy, "label": self.settings.label(), "calibrate_method": self.settings.calibrate_method,
                "layers_in_float": len(self.excluded), **self.fidelity.as_dict()}


def samples_cap(settings: OrtQuantSettings) -> int | None:
    """How many calibration samples a remedy with these settings may use (None: all of them)."""
    return HISTOGRAM_SAMPLES if settings.calibrate_method != "MinMax" else None


def setting_changes(settings: OrtQuantSettings) -> list[tuple[str, dict[str, Any]]]:
    """The settings remedies that apply to ``settings``, in the order they are tried."""
    changes: list[tuple[str, dict[str, Any]]] = []
    if not settings.per_channel:
        changes.append(("per-channel weights", {"per_channel": True}))
    changes += [(f"{m} calibration", {"calibrate_method": m}) for m in ("Percentile", "Entropy")
                if settings.calibrate_method != m]
    if not settings.reduce_range:
        changes.append(("7-bit weights (reduce_range)", {"reduce_range": True}))
    if not settings.average_ranges:
        changes.append(("mean min/max ranges", {"calibrate_method": "MinMax", "average_ranges": True}))
    if settings.quantize_ops != "compute":
        changes.append(("Conv/MatMul/Gemm only in INT8", {"quantize_ops": "compute"}))
    return changes


def remedy(first: Candidate, quantize: Quantize, measure: Measure, layers: list[str], work: Path,
           log: Callable[[str], None] = _log.info) -> tuple[Candidate, list[Candidate]]:
    """The chosen candidate and every one tried (``first`` included). ``layers``: weighted layers,
    most sensitive first, that may be kept in float."""
    tried = [first]
    best = _settings_remedies(first, quantize, measure, work, log, tried)
    if layers and not best.fidelity.ok:
        best = _layers_in_float(best, quantize, measure, layers, work, tried, log)
    return best, tried


def _settings_remedies(first: Candidate, quantize: Quantize, measure: Measure, work: Path,
                       log: Callable[[str], None], tried: list[Candidate]) -> Candidate:
    best = first
    for index, (name, change) in enumerate(setting_changes(first.settings)):
        settings = best.settings.model_copy(update=change)
        try:
            path = quantize(settings, best.excluded, work / f"remedy{index}.onnx")
        except EdgekitError as exc:  # a remedy ORT cannot apply is skipped, and said
            log(f"remedy: {name} failed ({exc})")
            continue
        candidate = Candidate(name, settings, best.excluded, path, measure(path))
        tried.append(candidate)
        log(f"remedy: {name}: cosine {candidate.fidelity.cosine:.4f}, agreement {candidate.fidelity.agreement:.1f}%")
        if candidate.fidelity.improves_on(best.fidelity):
            best = candidate
        if best.fidelity.ok:
            break
    return best


def _layers_in_float(best: Candidate, quantize: Quantize, measure: Measure, layers: list[str], work: Path,
                     tried: list[Candidate], log: Callable[[str], None]) -> Candidate:
    """Keep 1, 3, 7, ... of the most sensitive layers in float until the threshold is met (or the cap)."""
    by_path: dict[Path, Candidate] = {best.path: best}
    start = best

    def quantize_excluding(nodes: list[str]) -> Path:
        if not nodes:
            return start.path
        path = quantize(start.settings, start.excluded + nodes, work / f"float{len(nodes)}.onnx")
        candidate = Candidate(f"{len(nodes)} sensitive layer(s) in float", start.settings, start.excluded + nodes,
                              path, measure(path))
        by_path[path] = candidate
        tried.append(candidate)
        log(f"remedy: {candidate.remedy}: cosine {candidate.fidelity.cosine:.4f}, "
            f"agreement {candidate.fidelity.agreement:.1f}%")
        return path

    def score(path: Path) -> float:  # 100 when faithful: the budget is 0 "fidelity points"
        return 100.0 - by_path[path].fidelity.shortfall()

    cap = max(MIN_FLOAT_LAYERS, int(len(layers) * MAX_FLOAT_FRACTION))
    candidates = [c for c in layers if c not in start.excluded][:cap]
    try:
        outcome = meet_accuracy_budget(quantize_excluding, score, 100.0, 0.0, candidates, log=lambda _: None,
                                       key="fidelity")
        return by_path[outcome["path"]]
    except EdgekitError:  # not met even with every layer in float: the most faithful one tried
        return min(by_path.values(), key=lambda c: c.fidelity.shortfall())


def explain(first: Candidate, chosen: Candidate, tried: list[Candidate]) -> str:
    """One line: what was chosen and why."""
    before, after = first.fidelity, chosen.fidelity
    if chosen is first:
        return (f"remedy: none of {len(tried) - 1} remedies improved fidelity; kept {first.settings.label()} "
                f"(cosine {before.cosine:.4f}, agreement {before.agreement:.1f}%)")
    what = chosen.settings.label() + (f" {chosen.settings.calibrate_method}" if chosen.settings.calibrate_method != "MinMax" else "")
    what += " mean-range" if chosen.settings.average_ranges else ""
    if chosen.excluded:
        what += f" with {len(chosen.excluded)} layer(s) in float"
    why = "the first remedy that meets the threshold" if after.ok else f"the most faithful of {len(tried)} tried"
    return (f"remedy: chose {what}: {why} (cosine {before.cosine:.4f} -> {after.cosine:.4f}, "
            f"agreement {before.agreement:.1f}% -> {after.agreement:.1f}%)")
