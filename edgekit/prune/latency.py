"""``prune --target-latency``: the pruning ratio whose shipped model meets a latency, measured.

MACs do not predict latency well across machines and formats (grouped and depthwise layers, memory
bound layers, INT8 kernels that exist on one CPU and not another), so each candidate ratio is
pruned, exported (and quantized, for an INT8 format), and timed by a
:class:`~edgekit.bench.measure.Measurer` on the machine it is for. MACs only give the first guess:
latency ~ MACs ~ (1 - ratio)^2 for channel pruning. Each candidate is timed side by side with the
unpruned model (alternating processes, ROUNDS each) and its latency is its median ratio to the
unpruned model times the unpruned model's median p50: this machine's speed drifted by 20-30%
between consecutive measurements of one file, which moves both alike. Then the search interpolates
between the measured points that bracket the target, aiming a little under it (``AIM``) so the
chosen model still meets it when measured again, and keeps the *smallest* ratio that meets it (the
least pruning costs the least accuracy), once a second measurement of it meets it too (one lucky
run once chose ratio 0.38 for 9.7 ms that then measured 15.8 ms). Every measured point is kept:
the ratio/latency curve goes into the manifest and is printed.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable

from edgekit.errors import EdgekitError
from edgekit.modelcopy import copy_model
from edgekit.prune.report import PruneReport, PruneSettings

_log = logging.getLogger(__name__)

FORMATS = ("fp32-onnx", "int8-onnx", "int8-tflite")
CALIBRATION_SAMPLES = 100  # to quantize each INT8 candidate: its latency, not its accuracy, is what counts
AIM = 0.95          # aim at 95% of the target: a re-measurement's noise stays under it
CLOSE_ENOUGH = 0.9  # a meeting point this close to the target (p50 >= 90% of it) ends the search
MAX_TRIALS = 8      # measured ratios in all, the unpruned model included
ROUNDS = 3          # alternating unpruned/candidate processes per measurement
CONFIRMATIONS = 2   # a chosen ratio that fails its second measurement: search on, at most this often
MIN_RATIO = 0.02


@dataclasses.dataclass
class Trial:
    ratio: float
    p50_ms: float
    p50_range: list[float]  # lowest and highest estimate over the side-by-side rounds
    macs: int
    model: Any = None
    report: PruneReport | None = None

    def row(self) -> dict[str, Any]:
        return {"ratio": round(self.ratio, 4), "macs": self.macs, "p50_ms": round(self.p50_ms, 4),
                "p50_range": [round(v, 4) for v in self.p50_range]}


class Shipped:
    """Turns a (pruned) model into the file the user will ship, in a scratch folder."""

    def __init__(self, kind: str, example: Any, work: Path, calib: Any = None) -> None:
        if kind not in FORMATS:
            raise EdgekitError(f"--latency-of: {kind!r} is not one of {', '.join(FORMATS)}")
        if kind != "fp32-onnx" and calib is None:
            raise EdgekitError(f"--latency-of {kind}: needs --calib DATA and --recipe NAME to quantize the candidates")
        self.kind, self.example, self.work, self.calib = kind, example, work, calib
        self.count = 0

    def __call__(self, model: Any) -> Path:
        from edgekit.export.onnx_export import export_onnx

        self.count += 1
        onnx = self.work / f"candidate{self.count}.fp32.onnx"
        export_onnx(model, self.example, onnx, parity_count=2, force=True)
        if self.kind == "fp32-onnx":
            return onnx
        from edgekit.quantize.registry import get_backend

        backend = get_backend("ort" if self.kind == "int8-onnx" else "tflite")
        out = self.work / f"candidate{self.count}.int8{backend.suffix}"
        options = {"sensitivity": False, "remedies": False, "progress": False} if backend.name == "ort" else {}
        backend.load()(onnx, out, self.calib, force=True, **options)
        return out


def search(model: Any, example: Any, settings: PruneSettings, target_ms: float, measure: Callable[[list[Path]], list[dict[str, Any]]],
           prune: Callable[[Any, PruneSettings], PruneReport], ship: Callable[[Any], Path], max_ratio: float = 0.9,
           log: Callable[[str], None] = _log.info) -> tuple[Trial, list[Trial]]:
    """(the chosen trial, every trial in the order measured). ``prune(model, settings)`` prunes in
    place; ``ship(model)`` writes the file to time; ``measure`` times files (bench.measure.Measurer).
    EdgekitError when even ``max_ratio`` is too slow."""
    if not target_ms > 0 or not math.isfinite(target_ms):
        raise EdgekitError(f"--target-latency: must be a positive number of milliseconds, got {target_ms}")
    from edgekit.prune.structured import count_macs_params

    trials: list[Trial] = []
    reference: list[float] = []  # every p50 of the unpruned model: its median is the scale of all ratios
    unpruned_file: list[Path] = []

    def timed(candidate: Any) -> tuple[float, list[float]]:
        """p50 of ``candidate`` as (median ratio to the unpruned model, measured side by side in ROUNDS
        alternating processes) x the unpruned model's median p50: a machine whose speed drifts by 20-30%
        from one minute to the next (measured here) moves both alike, and the ratio stays."""
        shipped = ship(candidate)
        if not unpruned_file:
            unpruned_file.append(shipped)
            stats = measure([shipped] * ROUNDS)
            reference.extend(s["p50"] for s in stats)
            middle = statistics.median(reference)
            return middle, [min(s["p50_ci95"][0] for s in stats), max(s["p50_ci95"][1] for s in stats)]
        stats = measure([unpruned_file[0], shipped] * ROUNDS)
        reference.extend(s["p50"] for s in stats[0::2])
        ratios = [c["p50"] / u["p50"] for u, c in zip(stats[0::2], stats[1::2])]
        scale = statistics.median(reference)
        return statistics.median(ratios) * scale, [min(ratios) * scale, max(ratios) * scale]

    def trial(ratio: float) -> Trial:
        candidate = copy_model(model)
        report = prune(candidate, dataclasses.replace(settings, ratio=ratio, target_macs=None)) if ratio > 0 else None
        p50, spread = timed(candidate)
        macs = report.macs_after if report else count_macs_params(candidate, example)[0]
        done = Trial(ratio, p50, spread, macs, candidate, report)
        trials.append(done)
        log(f"target latency {target_ms:g} ms: ratio {ratio:.3f} -> {done.p50_ms:.3f} ms p50 ({macs / 1e6:.1f} MMACs)")
        return done

    unpruned = trial(0.0)
    if unpruned.p50_ms <= target_ms:
        log(f"target latency {target_ms:g} ms: the unpruned model already meets it ({unpruned.p50_ms:.3f} ms)")
        return unpruned, trials
    ratio: float | None = min(max_ratio, max(MIN_RATIO, 1.0 - math.sqrt(AIM * target_ms / unpruned.p50_ms)))
    for _ in range(CONFIRMATIONS + 1):
        _refine(trial, trials, ratio, target_ms, max_ratio)
        meeting = [t for t in trials if t.p50_ms <= target_ms]
        if not meeting:
            break
        chosen = min(meeting, key=lambda t: t.ratio)
        again, spread = timed(chosen.model)  # one measurement can be a lucky one: it must meet twice
        chosen.p50_ms, chosen.p50_range = max(chosen.p50_ms, again), [min(chosen.p50_range[0], spread[0]),
                                                                     max(chosen.p50_range[1], spread[1])]
        log(f"target latency {target_ms:g} ms: ratio {chosen.ratio:.3f} measured again -> {again:.3f} ms p50")
        if chosen.p50_ms <= target_ms:
            return chosen, trials
        ratio = _next_ratio(trials, AIM * target_ms, max_ratio)
        if ratio is None:
            break
    fastest = min(trials, key=lambda t: t.p50_ms)
    raise EdgekitError(f"--target-latency {target_ms:g} ms: not met even at ratio {fastest.ratio:.2f} "
                       f"({fastest.p50_ms:.3f} ms p50, the largest allowed is --max-ratio {max_ratio:g}); "
                       "allow a larger --max-ratio, a faster format (--latency-of int8-onnx), or a slower target")


def _refine(trial: Callable[[float], Trial], trials: list[Trial], ratio: float | None, target_ms: float,
            max_ratio: float) -> None:
    """Measure from ``ratio`` on, interpolating, until a meeting point is close enough to the target,
    the next ratio repeats one measured, or the trials run out (MAX_TRIALS in all)."""
    while ratio is not None and len(trials) < MAX_TRIALS:
        if any(abs(ratio - t.ratio) < 0.01 for t in trials):
            return
        current = trial(ratio)
        meeting = [t for t in trials if t.p50_ms <= target_ms]
        if meeting and min(meeting, key=lambda t: t.ratio).p50_ms >= CLOSE_ENOUGH * target_ms:
            return
        if current.ratio >= max_ratio and current.p50_ms > target_ms:
            return
        ratio = _next_ratio(trials, AIM * target_ms, max_ratio)


def _next_ratio(trials: list[Trial], aim_ms: float, max_ratio: float) -> float | None:
    """The next ratio to try: linear interpolation of latency over ratio between the measured points
    that bracket ``aim_ms``; with none faster yet, a step along the slope of the two largest ratios.
    None when the largest allowed ratio was measured and is still too slow. (The unpruned point is
    always slower than the aim: the search returns before when it is not.)"""
    points = sorted((t.ratio, t.p50_ms) for t in trials)
    faster = [p for p in points if p[1] <= aim_ms]
    if faster:
        r1, l1 = min(faster)
        r0, l0 = max(p for p in points if p[0] < r1 and p[1] > aim_ms)
        return r0 + (r1 - r0) * (l0 - aim_ms) / (l0 - l1) if l0 > l1 else (r0 + r1) / 2
    (ra, la), (rb, lb) = points[-2], points[-1]
    if rb >= max_ratio:
        return None
    slope = (lb - la) / (rb - ra) if rb > ra else 0.0
    guess = rb + (aim_ms - lb) / slope if slope < 0 else rb + 0.15
    return min(max_ratio, max(MIN_RATIO, guess))


def unpruned_report(model: Any, example: Any, settings: PruneSettings) -> PruneReport:
    """The report of a model left as it is (the unpruned model already meets the target)."""
    from edgekit.prune.structured import count_macs_params, layer_widths

    macs, params = count_macs_params(model, example)
    widths = layer_widths(model)
    return PruneReport(dataclasses.replace(settings, ratio=0.0, target_macs=None), [], macs, macs, params, params,
                       {name: {"before": w, "after": w} for name, w in widths.items()})


def curve_text(trials: list[Trial], chosen: Trial, target_ms: float, where: str) -> str:
    """The measured ratio/latency curve, the chosen row marked."""
    from tabulate import tabulate

    rows = [[f"{t.ratio:.3f}", f"{t.macs / 1e6:.1f}", f"{t.p50_ms:.3f}",
             f"[{t.p50_range[0]:.3f}, {t.p50_range[1]:.3f}]",
             "meets" if t.p50_ms <= target_ms else "too slow", "<- chosen" if t is chosen else ""]
            for t in sorted(trials, key=lambda t: t.ratio)]
    return (f"ratio/latency measured on {where} (target {target_ms:g} ms)\n"
            + tabulate(rows, headers=["ratio", "MMACs", "p50 ms", "range over rounds", "", ""]))


def search_record(chosen: Trial, trials: list[Trial], target_ms: float, latency_of: str, measure: Any) -> dict[str, Any]:
    """The manifest's ``latency_search``: the target, where it was measured, the choice and the curve."""
    unpruned = min(trials, key=lambda t: t.ratio)
    return {"target_ms": target_ms, "latency_of": latency_of, "measured_on": measure.where,
            "unpruned_p50_ms": round(unpruned.p50_ms, 4),
            "on_device": measure.on_device, "chosen_ratio": round(chosen.ratio, 4),
            "chosen_p50_ms": round(chosen.p50_ms, 4),
            "curve": [t.row() for t in sorted(trials, key=lambda t: t.ratio)]}


def prune_to_latency(model: Any, example: Any, settings: PruneSettings, target_ms: float, measure: Any,
                     prune: Callable[[Any, PruneSettings], PruneReport], latency_of: str, calib: Any = None,
                     max_ratio: float = 0.9, log: Callable[[str], None] = _log.info,
                     ) -> tuple[Any, PruneReport, dict[str, Any]]:
    """The whole ``--target-latency`` step, as the CLI and the pipeline run it: search (candidates shipped
    as ``latency_of`` in a scratch folder), print the curve, and return (the pruned model, its report,
    the manifest's ``latency_search``)."""
    with scratch() as work:
        chosen, trials = search(model, example, settings, target_ms, measure, prune,
                                Shipped(latency_of, example, Path(work), calib), max_ratio, log)
    log(curve_text(trials, chosen, target_ms, measure.where))
    log(measure.scope_note())
    report = chosen.report or unpruned_report(chosen.model, example, settings)
    return chosen.model, report, search_record(chosen, trials, target_ms, latency_of, measure)


def scratch() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="edgekit-latency-")
