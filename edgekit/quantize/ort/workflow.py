"""ORT quantization as the CLI and the pipeline both run it: optional ``auto`` choice of settings,
one quantization, the per-layer sensitivity ranking (once), its fidelity to FP32 on held-out samples
and, below the threshold, the remedies (``remedies.py``), the optional accuracy-budget search, the
INT8-vs-FP32 speed check (``edgekit.quantize.speed``), then the artifact and its manifest written once.

Everything happens in a scratch folder beside the output (pre-processing once, every candidate and
budget step there); only the final model is renamed into place, so an interrupted search leaves
nothing half-written. The FP32 model is loaded and checked once (``onnx.checker``), here or by
the caller (``model=``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from edgekit.atomic import atomic_path, check_can_write, work_dir
from edgekit.errors import EdgekitError, first_line
from edgekit.inspect import float_onnx
from edgekit.manifest import derive_manifest, write_manifest
from edgekit.quantize import fidelity as fidelity_mod
from edgekit.quantize.ort import auto as auto_mod
from edgekit.quantize import head
from edgekit.quantize.onnx_tokens import TOKEN_SCALE_IMAGES
from edgekit.quantize.ort import remedies as remedies_mod
from edgekit.quantize import speed
from edgekit.quantize.ort import speed as ort_speed
from edgekit.quantize.ort.calibration_cache import CalibrationCache
from edgekit.quantize.ort.kernels import fused_kernels_check, kernel_remedy, remedied_warning
from edgekit.quantize.ort.quantizer import calibration_feed, preprocess, quantize_prepared
from edgekit.quantize.ort.sensitivity import budget_candidates, meet_accuracy_budget, ranking_or_reason
from edgekit.quantize.ort.settings import OrtQuantSettings
from edgekit.quantize.result import QuantizeResult
from edgekit.tasks import get_task

_log = logging.getLogger(__name__)

Accuracy = Callable[[Path], float]  # top-1 (%) of a model file, e.g. edgekit.quantize.accuracy.accuracy_on
SENSITIVITY_SAMPLES = 8  # activations of the float and the QDQ model are captured on this many inputs
AUTO_DEFAULT_BUDGET = 1.0  # top-1 points ``auto`` may lose when no budget is given


def check_budget(accuracy_budget: float | None, evaluate: Accuracy | None, key: str = "--accuracy-budget") -> None:
    """A budget is a number of top-1 points in [0, 100] and needs something to measure accuracy with."""
    if accuracy_budget is None:
        return
    if not math.isfinite(accuracy_budget) or not 0 <= accuracy_budget <= 100:
        raise EdgekitError(f"{key}: must be between 0 and 100 top-1 points, got {accuracy_budget}")
    if evaluate is None:
        raise EdgekitError(f"{key}: needs --eval DATA to measure accuracy on")


def quantize_ort_workflow(
    fp32: str | Path,
    out: str | Path,
    calib: np.ndarray,
    settings: OrtQuantSettings | None = None,
    *,
    exclude: Sequence[str] = (),
    auto: bool = False,
    accuracy_budget: float | None = None,
    evaluate: Accuracy | None = None,
    budget_key: str = "--accuracy-budget",
    sensitivity: bool = True,
    calibration_info: dict[str, Any] | None = None,
    details: dict[str, Any] | None = None,
    model: Any = None,
    threads: int | None = None,
    force: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = _log.info,
    remedies: bool = True,
    holdout: np.ndarray | None = None,
    timer: speed.Timer | None = None,
    measure: Any = None,
    task: str = "classification",
) -> QuantizeResult:
    """Quantize ``fp32`` to ``out``; see the module docstring. ``evaluate`` measures top-1 of a file
    (``edgekit.quantize.accuracy.accuracy_on``) and is needed by ``accuracy_budget``; ``auto`` uses it when given.
    ``budget_key`` names the budget in errors: ``--accuracy-budget``, or the pipeline file's key.
    ``holdout``: tensors to measure fidelity on (default: a held-out slice of ``calib``); ``remedies``:
    try them when fidelity is low; ``timer``: measures a model file (default ``speed.default_timer``);
    ``measure``: where ``auto`` times its candidates (an ``edgekit.bench.measure.Measurer``; default
    ``speed.Here(threads)``, this process: quantize does not depend on bench, data flows the other way).
    ``task``: what fidelity's agreement means (a detector's boxes, a segmenter's pixels; edgekit.tasks)."""
    fp32, out = Path(fp32), Path(out)
    check_budget(accuracy_budget, evaluate, budget_key)
    check_can_write(out, force, inputs=[fp32])
    settings = (settings or OrtQuantSettings()).for_host()
    model = float_onnx(fp32, model)
    calib, samples, source = fidelity_mod.samples_for(calib, holdout)
    feed = calibration_feed(model, calib, fp32)
    calibration_feed(model, samples, fp32)  # the held-out tensors fit the model too
    extra: dict[str, Any] = dict(details or {})
    if task != "classification":  # later commands (eval, report) read it from the manifest
        extra["task"] = task
    excluded = list(exclude)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with work_dir(out) as work:
        prepared = preprocess(fp32, work, calibration=calib[:TOKEN_SCALE_IMAGES])
        calibrations = CalibrationCache()

        def quantize(chosen: OrtQuantSettings, nodes: list[str], path: Path, show: bool = False,
                     cap: int | None = None) -> Path:
            used = dataclasses.replace(feed, tensors=feed.tensors[:cap]) if cap and len(feed.tensors) > cap else feed
            return quantize_prepared(prepared, path, used, chosen, nodes, progress=show, label=fp32, cache=calibrations)

        if auto:
            measure = measure or speed.Here(threads, feed.shape)
            table = auto_mod.choose(fp32, lambda s, path: quantize(s, excluded, path), evaluate or (lambda _: None),
                                    accuracy_budget if accuracy_budget is not None else AUTO_DEFAULT_BUDGET,
                                    measure, log)
            log(auto_mod.render(table))
            if table["winner"] is None:
                raise EdgekitError("--auto: no INT8 candidate stayed within the accuracy budget")
            settings = table["winner"]["settings"]
            extra["auto"] = [{k: v for k, v in r.items() if k != "settings"} for r in table["rows"]]
            extra["auto_measured_on"] = table["measured_on"]
            timings["auto_s"] = time.perf_counter() - started
        first = quantize(settings, excluded, work / "int8.onnx", progress)
        timings["quantize_s"] = time.perf_counter() - started - timings.get("auto_s", 0.0)
        t0 = time.perf_counter()
        check = fidelity_mod.Check(fp32, samples, source, threads, task)
        tail = [n for n in head.output_tail(model) if n not in excluded] if get_task(task).decodes_in_graph else []
        if tail:
            first, kept, extra["output_tail"] = head.choose(
                first, tail, lambda nodes: quantize(settings, excluded + nodes, work / "tail.onnx"), check, log)
            excluded += kept
        before = check(first)
        timings["fidelity_s"] = time.perf_counter() - t0
        kernel_fix: dict[str, Any] = {}
        if remedies and not before.ok:  # first: the remedies below should search kernels that compute right
            t0 = time.perf_counter()
            first, before, kernel_fix = kernel_remedy(
                check, first, before, lambda nodes: quantize(settings, excluded + nodes, work / f"kernels{len(nodes)}.onnx"),
                work, log)
            excluded += kernel_fix.get("kept_in_float", [])
            timings["kernel_remedy_s"] = time.perf_counter() - t0
        top1 = None
        ranking, note = None, None
        if sensitivity or (accuracy_budget is not None and not auto) or (remedies and not before.ok):
            t0 = time.perf_counter()
            ranking, note = ranking_or_reason(model, fp32, first, calib[:SENSITIVITY_SAMPLES], settings)
            timings["sensitivity_s"] = time.perf_counter() - t0
        if remedies and not before.ok:
            t0 = time.perf_counter()
            log(before.line())
            start = remedies_mod.Candidate("as configured", settings, [], first, before)
            layers = [] if accuracy_budget is not None else [  # with labels, the budget search keeps layers in float
                c for c in budget_candidates(model, ranking) if c not in excluded]
            chosen, tried = remedies_mod.remedy(
                start, lambda s, nodes, path: quantize(s, excluded + nodes, path, cap=remedies_mod.samples_cap(s)),
                check, layers, work, log)
            log(remedies_mod.explain(start, chosen, tried))
            settings, first = chosen.settings, chosen.path
            excluded += chosen.excluded
            extra["remedies"] = {"chosen": chosen.row(), "tried": [c.row() for c in tried]}
            timings["remedies_s"] = time.perf_counter() - t0
        final = first
        if accuracy_budget is not None and not auto:
            assert evaluate is not None  # check_budget
            fp32_top1 = evaluate(fp32)
            candidates = [c for c in budget_candidates(model, ranking) if c not in excluded]
            outcome = meet_accuracy_budget(
                lambda nodes: first if not nodes else quantize(settings, excluded + nodes, work / f"budget{len(nodes)}.onnx"),
                evaluate, fp32_top1, accuracy_budget, candidates, log, budget_key)
            final, top1 = outcome.pop("path"), outcome["top1"]
            excluded += outcome["excluded"]
            extra["accuracy_budget"] = {"budget": accuracy_budget, "fp32_top1": fp32_top1, **outcome}
        elif evaluate is not None:
            top1 = evaluate(first)
        if top1 is not None:
            extra["top1"] = top1
        faithful = check(final)
        kernel_record, kernel_warning = fused_kernels_check(check, final, faithful)
        extra.update(kernel_record)
        if kernel_fix:
            extra["kernel_remedy"] = kernel_fix
        extra["int8_vs_fp32_speed"] = speed.checked(fp32, final, timer or speed.default_timer(threads, feed.shape),
                                                    lambda p50: ort_speed.reason(final, settings.as_dict(), p50), timings)
        with atomic_path(out, force) as tmp:
            shutil.copyfile(final, tmp)
    timings["total_s"] = time.perf_counter() - started
    warnings = [note] if note and settings.format == "QDQ" else []  # a QDQ ranking that failed
    fixed = remedied_warning(kernel_fix, faithful) if kernel_fix else None
    warnings += [w for w in (faithful.warning(_advice(remedies, "remedies" in extra)), fixed, kernel_warning) if w]
    result = QuantizeResult(
        backend="ort", label=settings.label(), paths={"int8": out}, settings=settings.as_dict(),
        calibration={**(calibration_info or {}), "num_samples": int(len(feed.tensors)),
                     "held_out": int(len(samples)) if source == "held-out" else 0},
        nodes_excluded=excluded, timings=timings, sensitivity=ranking, sensitivity_note=note, warnings=warnings,
        details=extra, fidelity=faithful,
    )
    log(faithful.line())
    result.say_warnings(_log)  # stderr as "warning: ...", kept by -q
    write_manifest(out, derive_manifest(fp32, out, result.stage()))
    return result


def _advice(remedies: bool, tried: bool) -> str:
    if not remedies:
        return ("run without --no-remedies (quantize.remedies: true) to try per-channel weights, Percentile/Entropy "
                "calibration, 7-bit weights and the most sensitive layers in float")
    if tried:
        return ("no remedy reached the threshold: try more representative --calib images, --exclude the layers "
                "ranked most sensitive, or quantization-aware training")
    return "try more representative --calib images or --exclude the layers ranked most sensitive"


def quantize_ort(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calib: np.ndarray,
    settings: OrtQuantSettings | None = None,
    *,
    nodes_to_exclude: Sequence[str] = (),
    calibration_info: dict[str, Any] | None = None,
    force: bool = False,
    progress: bool = True,
) -> QuantizeResult:
    """One quantization with the given (default: this host's) settings, no ranking, search or remedy
    (its fidelity and speed against FP32 are still measured and warned about)."""
    return quantize_ort_workflow(onnx_in, onnx_out, calib, settings, exclude=nodes_to_exclude, sensitivity=False,
                                 calibration_info=calibration_info, force=force, progress=progress, remedies=False)
