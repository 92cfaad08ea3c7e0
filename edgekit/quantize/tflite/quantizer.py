"""ONNX -> TFLite full-integer INT8 (and the FP32 ``.tflite`` reference), calibrated on our tensors."""
from __future__ import annotations

import functools
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekit.atomic import atomic_path, check_can_write, work_dir
from edgekit.errors import EdgekitError, first_line
from edgekit.quantize import fidelity as fidelity_mod
from edgekit.quantize import speed
from edgekit.inspect import float_onnx
from edgekit.manifest import derive_manifest, write_manifest
from edgekit.quantize.ort.quantizer import calibration_feed
from edgekit.tasks import get_task
from edgekit.quantize.result import QuantizeResult
from edgekit.quantize.tflite.checks import float_ops
from edgekit.quantize.tflite.convert import calibrate, non_compute_tensors, quantize_calibrated, to_tflite
from edgekit.quantize.tflite import layout_ambiguity
from edgekit.quantize.tflite.keras_build import PREPARED_COPY, build_keras, integer_graph_computes_float
from edgekit.quantize.tflite.kernels import builtin_kernels_check
from edgekit.quantize.tflite.ranges import (LABELS as RANGE_LABELS, MEAN, MEAN_ABSOLUTE_VARIANCE, MINMAX, Calibrated,
                                            has_normalization_variance)
from edgekit.runtime.verify import verify_tflite

_log = logging.getLogger(__name__)
FP32_MIN_COSINE = 0.999  # the FP32 TFLite against the ONNX model: below it, a mistranslation (_check_translation)
# ... unless the model amplifies float rounding: then up to 4x the distance rounding-sized input noise moves it.
# Two right float implementations each that far from the exact output are about twice as far from each
# other (1 - cosine grows with the squared distance), and twice that again covers 8 images' sampling noise.
SPREAD_FACTOR = 4.0


def fp32_path_for(output: str | Path) -> Path:
    """``r18.int8.tflite`` -> ``r18.fp32.tflite`` (the reference written beside the INT8 model)."""
    output = Path(output)
    stem = output.name[: -len(".tflite")] if output.name.endswith(".tflite") else output.stem
    parts = [part for part in stem.split(".") if part != "int8"]
    return output.with_name(".".join([*parts, "fp32", "tflite"]))


def _label(float_ops: list[str], float_io: bool, ranges: str = MINMAX, compute_only: bool = False) -> str:
    """What the model is, for the output, the manifest and the report: full-integer or not."""
    scope = "Conv/FullyConnected/BatchMatMul only" if compute_only else "with float fallback"
    kind = (f"TFLite INT8 {scope} (not full-integer: {', '.join(float_ops)} in float)" if float_ops
            else "TFLite full-integer INT8")
    return kind + (" (float I/O)" if float_io else "") + (f" ({RANGE_LABELS[ranges]})" if ranges != MINMAX else "")


def _slow_reason(float_ops: list[str]) -> speed.Reason:
    """Why this TFLite INT8 model can be slower than its FP32 twin, where known."""
    def why(fp32_p50_ms: float) -> str | None:
        if float_ops:
            return (f"{', '.join(float_ops)} run in float, with a dequantize and a quantize around each: "
                    "use FP32 on this CPU or find an integer form for those ops")
        return speed.small_model_reason(fp32_p50_ms)
    return why


ADVICE = ("try more representative --calib images, --runtime onnxruntime (its remedies can keep the most sensitive "
          "layers in float), or quantization-aware training")
SCOPE_ADVICE = ("try --quantize-ops compute (every op but Conv/FullyConnected/BatchMatMul in float: not full-integer), "
                "more representative --calib images, --runtime onnxruntime, or quantization-aware training")


def _range_remedy(first: bytes, convert: Callable[[str], bytes], check: fidelity_mod.Check,
                  scratch: Path) -> tuple[bytes, str, fidelity_mod.Fidelity | None, dict[str, Any] | None]:
    """Faithful INT8 by default: below the fidelity threshold, the same calibration quantized with mean
    min/max ranges (:mod:`ranges`; ``convert(kind)``) and, where the model computes a normalization's
    variance, with mean ranges but the variances' absolute ones; the best candidate that improves on the first is kept
    (:meth:`Fidelity.improves_on`). Returns (the chosen flatbuffer, its ranges, its fidelity, the
    record); a first model that cannot be measured is kept as it is (its measurement's note comes later)."""
    path = scratch / "minmax.tflite"
    path.write_bytes(first)
    before, _ = _fidelity(check, path)
    if before is None or before.ok:
        return first, MINMAX, before, None
    t0 = time.perf_counter()
    kinds = [MEAN, *([MEAN_ABSOLUTE_VARIANCE] if has_normalization_variance(first) else [])]
    tried = [{"remedy": "as configured", "ranges": MINMAX, **before.as_dict()}]
    chosen, kind, faithful, entry = first, MINMAX, before, tried[0]
    converted, notes = False, []
    for candidate_kind in kinds:
        try:
            candidate = convert(candidate_kind)
        except EdgekitError as exc:  # a remedy the converter cannot apply is skipped, and said
            _log.info(f"remedy: {RANGE_LABELS[candidate_kind]} failed ({exc})")
            continue
        converted = True
        path = scratch / f"{candidate_kind}.tflite"
        path.write_bytes(candidate)
        after, note = _fidelity(check, path)
        if after is None:
            notes.append(note)
            continue
        tried.append({"remedy": RANGE_LABELS[candidate_kind], "ranges": candidate_kind, **after.as_dict()})
        _log.info(f"remedy: {RANGE_LABELS[candidate_kind]}: cosine {after.cosine:.4f}, agreement {after.agreement:.1f}%")
        if after.improves_on(faithful):
            chosen, kind, faithful, entry = candidate, candidate_kind, after, tried[-1]
    if not converted:
        return first, MINMAX, before, None
    if kind != MINMAX:
        _log.info(f"remedy: chose {RANGE_LABELS[kind]} (cosine {before.cosine:.4f} -> {faithful.cosine:.4f}, "
                  f"agreement {before.agreement:.1f}% -> {faithful.agreement:.1f}%)")
    else:
        _log.info(f"remedy: kept {RANGE_LABELS[MINMAX]}: {' or '.join(RANGE_LABELS[k] for k in kinds)} did not "
                  "improve fidelity" + (f" ({'; '.join(n for n in notes if n)})" if any(notes) else ""))
    record = {"chosen": entry, "tried": tried, "seconds": round(time.perf_counter() - t0, 2)}
    return chosen, kind, faithful, record


def _check_translation(check: fidelity_mod.Check, fp32: Path, onnx_path: str | Path,
                       prepared: Path | None = None) -> tuple[float, float | None]:
    """Refuse a conversion whose FP32 TFLite computes something other than the ONNX model: onnx2tf's
    translation, not quantization, and the INT8 model is quantized from the same graph. Why: an
    Inception-V3 at 128 px converted without an error to an FP32 TFLite at cosine 0.843 to its ONNX
    model (a padded AveragePool on 2x2 maps, rewritten since), which the INT8 fidelity then blamed on
    INT8. A right translation differs by float rounding only (Inception-V3 up to its 2x2 blocks: max abs
    error 2e-4 on values up to 20, cosine 1.0000), unless the model amplifies float rounding itself:
    then the bar is what rounding-sized input noise does to it (:meth:`Check.float_spread`), with
    ``SPREAD_FACTOR`` of room. A refusal names the tensors of ``prepared`` (the graph onnx2tf read) whose
    layout it cannot tell from their shape (:mod:`.layout_ambiguity`). Returns (the FP32 TFLite's cosine,
    the spread where it was needed)."""
    try:
        got = check(fp32)
    except RuntimeError as exc:  # the converter fused an op its own kernel refuses (a 5-D L2_NORMALIZATION)
        raise EdgekitError(
            f"{onnx_path}: the TFLite converter made an operator its interpreter cannot run ({first_line(exc)}); "
            "reshape that operator's input to what the kernel takes, or use --runtime onnxruntime") from exc
    if got.cosine >= FP32_MIN_COSINE:
        return got.cosine, None
    spread = check.float_spread()
    bar = min(FP32_MIN_COSINE, 1.0 - SPREAD_FACTOR * (1.0 - spread))
    if got.cosine < bar:
        raise EdgekitError(
            f"{onnx_path}: the TFLite conversion computes something else than the ONNX model: the FP32 TFLite's "
            f"output cosine to it is {got.cosine:.4f} on {got.samples} {got.source} images, where float rounding "
            f"keeps it above {bar:.4f} (rounding-sized input noise: {spread:.4f}); an operator onnx2tf "
            "mistranslated, so no INT8 model is written"
            f"{layout_ambiguity.hint(prepared) if prepared is not None and prepared.exists() else ''} "
            "(-v shows onnx2tf's output; --runtime onnxruntime is unaffected)")
    return got.cosine, spread


def _amplifier_warning(translation: float, spread: float | None) -> str | None:
    """Said where the translation passed only on the model's own float spread: every fidelity figure of
    such a model measures its amplification of rounding as much as its quantization."""
    if spread is None:
        return None
    return (f"this model amplifies float rounding: {fidelity_mod.FLOAT_NOISE:g} of relative input noise moves its "
            f"output to cosine {spread:.4f}, and its FP32 TFLite sits at {translation:.4f} from the ONNX model; its "
            f"INT8 fidelity cannot reach {fidelity_mod.MIN_COSINE} whatever the quantizer (a trained model rarely "
            "does this: check the weights)")


def _written(path: Path, flatbuffer: bytes) -> Path:
    """``flatbuffer`` at ``path`` (scratch), so that the caller can drop it."""
    path.write_bytes(flatbuffer)
    return path


def _fidelity(check: fidelity_mod.Check, int8: Path) -> tuple[fidelity_mod.Fidelity | None, str | None]:
    """INT8 .tflite against the FP32 ONNX model; a measurement that cannot be made is a note, not an error."""
    try:
        return check(int8), None
    except Exception as exc:  # noqa: BLE001 - a diagnosis must not cost a conversion that succeeded
        return None, f"fidelity not measured ({type(exc).__name__}: {first_line(exc)})"


def _output_tail(full_integer: bytes, float_flatbuffer: bytes, quantize: Callable[[list[str]], bytes],
                 check: fidelity_mod.Check, scratch: Path) -> tuple[bytes, list[str], dict[str, Any]]:
    """A detector's INT8 as converted against the same with its output tail (decode, sigmoid, Concat)
    in float, by the task's fidelity (:mod:`edgekit.quantize.head`): (the chosen flatbuffer, the
    tensors it keeps in float, the record).
    ``float_flatbuffer``: the integer graph converted to FP32, whose tensor names the tail is found by;
    ``quantize``: the INT8 model with the given tensors kept in float."""
    from edgekit.quantize import head
    from edgekit.quantize.tflite.convert import output_tail_tensors

    tail = output_tail_tensors(float_flatbuffer)
    first = scratch / "full-integer.tflite"
    first.write_bytes(full_integer)

    def quantize_excluding(tensors: list[str]) -> Path:
        path = scratch / "tail-in-float.tflite"
        path.write_bytes(quantize(tensors))
        return path

    chosen, in_float, record = head.choose(first, tail, quantize_excluding, check, _log.info)
    return Path(chosen).read_bytes(), in_float, record


def _onnx_named(outputs: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """A multi-output model's TFLite outputs (already in ONNX order, see the TFLite runner) with the
    ONNX output each one is (``onnx_name``, from ``names``); TFLite's own names are ``PartitionedCall:1``
    and the like."""
    if len(names) < 2 or len(names) != len(outputs):
        return outputs
    return [{**o, "onnx_name": name} for o, name in zip(outputs, names)]


def quantize_tflite(
    onnx_path: str | Path,
    output_path: str | Path,
    calib: np.ndarray,
    *,
    float_io: bool = False,
    per_channel: bool = True,
    float_fallback: bool = False,
    write_fp32: bool = True,
    force: bool = False,
    progress: bool = True,
    calibration_info: dict[str, Any] | None = None,
    model: Any = None,
    holdout: np.ndarray | None = None,
    task: str = "classification",
    remedies: bool = True,
    quantize_ops: str = "all",
) -> QuantizeResult:
    """Write ``output_path`` (INT8) and, with ``write_fp32``, its FP32 reference (``paths["fp32"]``).
    ``remedies``: below the fidelity threshold, try mean min/max ranges (:func:`_range_remedy`).
    ``quantize_ops``: ``compute`` keeps every op but Conv/FullyConnected/BatchMatMul in float, as ORT's
    setting of that name and NNCF do: not full-integer, and labelled so. Why offer it: a full-integer
    ViT rounds about 20 tensors per block besides the weighted ops' inputs (LayerNorm's parts, residual
    Adds, Softmax, GELU), with no one op type to blame (ViT-B/32 at 128 px, zoo images: full-integer
    0.905, mean ranges 0.950; each op type kept in float alone 0.905-0.908, LayerNorm's ops alone
    0.924; compute-only 0.991).
    ``model``: the ONNX model already loaded and checked by the caller (else it is loaded here).
    ``holdout``: tensors to measure fidelity to the FP32 ONNX model on (default: a held-out slice of ``calib``)."""
    output_path = Path(output_path)
    if quantize_ops not in ("all", "compute"):
        raise EdgekitError(f"--quantize-ops: {quantize_ops!r} is not one of all, compute")
    if output_path.suffix.lower() != ".tflite":
        raise EdgekitError(f"{output_path}: the output must end in .tflite")
    check_can_write(output_path, force, inputs=[onnx_path])
    fp32_path = fp32_path_for(output_path)
    if write_fp32:
        check_can_write(fp32_path, force, inputs=[onnx_path])
    model = float_onnx(onnx_path, model)
    calib, samples, source = fidelity_mod.samples_for(calib, holdout)
    calibration_feed(model, calib, onnx_path)
    calibration_feed(model, samples, onnx_path)
    if calib.ndim != 4:
        raise EdgekitError(f"{onnx_path}: TFLite conversion expects 4-D image inputs, got {calib.ndim}-D calibration tensors")
    calib_nhwc = np.ascontiguousarray(calib.transpose(0, 2, 3, 1), dtype=np.float32)
    onnx_outputs, one_build = [o.name for o in model.graph.output], integer_graph_computes_float(model)
    del model  # the weights once more, which no conversion reads (a caller's own reference stays): memory
    timings: dict[str, float] = {}
    written: dict[str, Path] = {}

    def phase(name: str) -> None:
        if progress:
            _log.info(f"[tflite] {name}")

    # scratch beside the output (not /tmp): a killed conversion's 10+ MB are swept by the next writer
    with work_dir(output_path) as scratch:
        started = time.perf_counter()
        phase("ONNX -> Keras (onnx2tf, integer graph)")
        int_model = build_keras(onnx_path, scratch / "int", calib_nhwc, integer=True)
        timings["onnx2tf_s"] = time.perf_counter() - started

        @functools.cache
        def integer_build_as_fp32() -> Path:
            """Converted once: a detector's tail and the ops --quantize-ops compute keeps in float are found
            in it and, where no max-pool padding can tell the two builds apart, it is the FP32 reference too.
            On disk, not in memory, while the INT8 conversions run: each one peaks at 15-30x the model (edgekit.memory)."""
            return _written(scratch / "integer-build.fp32.tflite", to_tflite(int_model, None, progress=False))

        phase("ONNX -> Keras -> FP32 reference, checked against the ONNX model")
        t0 = time.perf_counter()
        fp32_file = integer_build_as_fp32() if one_build else _written(scratch / "float-build.fp32.tflite", to_tflite(
            build_keras(onnx_path, scratch / "fp32", calib_nhwc, integer=False), None, progress=progress))
        timings["fp32_s"] = time.perf_counter() - t0
        check = fidelity_mod.Check(onnx_path, samples, source, task=task)
        translation, spread = _check_translation(check, fp32_file, onnx_path, scratch / "int" / PREPARED_COPY)

        compute_only = quantize_ops == "compute"
        scope_in_float = non_compute_tensors(integer_build_as_fp32().read_bytes()) if compute_only else []

        @functools.cache
        def calibration(allow_float: bool) -> Calibrated:
            """Converted and calibrated once per op set: every INT8 candidate below is one quantization of it."""
            return calibrate(int_model, calib_nhwc, allow_float=allow_float, progress=progress)

        def int8(float_tensors: list[str], ranges: str = MINMAX) -> bytes:
            return quantize_calibrated(calibration(float_fallback or bool(float_tensors)), float_io=float_io,
                                       per_channel=per_channel, float_tensors=float_tensors, ranges=ranges,
                                       float_fallback=float_fallback)

        phase(f"Keras -> {'INT8 (Conv/FullyConnected/BatchMatMul)' if compute_only else 'full-integer INT8'} "
              f"({len(calib_nhwc)} calibration samples)")
        t0 = time.perf_counter()
        int8_bytes = int8(scope_in_float)
        timings["int8_convert_s"] = time.perf_counter() - t0

        tail_record, tail_in_float = None, []
        if get_task(task).decodes_in_graph and not compute_only:  # compute-only: the tail is float already
            t0 = time.perf_counter()
            int8_bytes, tail_in_float, tail_record = _output_tail(
                int8_bytes, integer_build_as_fp32().read_bytes(), int8, check, scratch)
            timings["output_tail_s"] = time.perf_counter() - t0
        ranges, range_record, measured = MINMAX, None, None
        if remedies:  # on top of the tail's choice: the candidates are the models that could be written
            int8_bytes, ranges, measured, range_record = _range_remedy(
                int8_bytes, lambda kind: int8(tail_in_float + scope_in_float, kind), check, scratch)
            if range_record:
                timings["remedies_s"] = range_record.pop("seconds")

        with atomic_path(output_path, force) as tmp:
            tmp.write_bytes(int8_bytes)
            phase("checking: integer-only ops, and one inference in a child interpreter")
            leftovers = float_ops(tmp)
            tail_float = bool(tail_record and tail_record["chosen"] == "tail in float")
            if leftovers and not (float_fallback or compute_only or tail_float):
                raise EdgekitError(
                    f"{output_path}: not full-integer: ops left in float: {', '.join(leftovers)} "
                    "(--float-fallback keeps such a model, labelled as not full-integer)"
                )
            verify_tflite(tmp, invoke=True, any_name=True, label=str(output_path))
        written["int8"] = output_path
        timings["total_s"] = time.perf_counter() - started
        if write_fp32:
            with atomic_path(fp32_path, force) as tmp:
                shutil.copyfile(fp32_file, tmp)
                verify_tflite(tmp, invoke=True, any_name=True, label=str(fp32_path))
            written["fp32"] = fp32_path

    faithful, note = (measured, None) if measured is not None else _fidelity(check, output_path)
    pace = speed.checked(fp32_path, output_path, speed.default_timer(None), _slow_reason(leftovers), timings) \
        if write_fp32 else None
    from edgekit.inspect import inspect_tflite

    int_info = inspect_tflite(output_path)
    advice = ADVICE if compute_only else SCOPE_ADVICE  # compute-only is what the full-integer advice suggests
    kernel_record, kernel_warning = builtin_kernels_check(check, output_path, faithful, int_info["ops"])
    result = QuantizeResult(
        backend="tflite", label=_label(leftovers, float_io, ranges, compute_only), paths=written,
        settings={"float_io": float_io, "per_channel": per_channel, "float_fallback": float_fallback, "ranges": ranges,
                  "quantize_ops": "compute" if compute_only else "all"},
        calibration={**(calibration_info or {}), "num_samples": int(len(calib)),
                     "held_out": int(len(samples)) if source == "held-out" else 0},
        full_integer=not leftovers, float_ops=leftovers, timings=timings,
        details={"ops": int_info["ops"], "converter": "edgekit-fast", "fp32_translation_cosine": round(translation, 6),
                 **({} if spread is None else {"fp32_float_spread_cosine": round(spread, 6)}),
                 **({} if task == "classification" else {"task": task}),
                 **({"output_tail": tail_record} if tail_record else {}), **({"fidelity_note": note} if note else {}),
                 **({"remedies": range_record} if range_record else {}),
                 **({"int8_vs_fp32_speed": pace} if pace else {}), **kernel_record},
        fidelity=faithful,
        warnings=[w for w in (note, faithful and faithful.warning(advice), kernel_warning,
                               _amplifier_warning(translation, spread)) if w],
    )
    if faithful is not None:
        _log.info(faithful.line())
    result.say_warnings(_log)  # stderr as "warning: ...", kept by -q
    io_spec = {"layout": "NHWC", "dtype": int_info["inputs"][0]["dtype"]}
    if "quantization" in int_info["inputs"][0]:
        io_spec["quantization"] = int_info["inputs"][0]["quantization"]
    write_manifest(output_path, derive_manifest(onnx_path, output_path, result.stage(), input_spec=io_spec,
                                                outputs=_onnx_named(int_info["outputs"], onnx_outputs)))
    if write_fp32:
        fp32_info = inspect_tflite(fp32_path)
        fp32_stage = {"stage": "convert", "backend": "tflite", "label": "TFLite FP32", "ops": fp32_info["ops"],
                      "seconds": round(timings["fp32_s"], 2)}
        write_manifest(fp32_path, derive_manifest(onnx_path, fp32_path, fp32_stage,
                                                  input_spec={"layout": "NHWC", "dtype": "float32"},
                                                  outputs=_onnx_named(fp32_info["outputs"], onnx_outputs)))
    return result
