"""``edgekit quantize``: FP32 ONNX -> INT8 for ONNX Runtime or TFLite, calibrated on the user's data
(``--mode static``), or without calibration data: ``--mode dynamic`` (INT8 weights) or ``--mode fp16``.

Parsing and printing only: the backends come from ``edgekit.quantize.registry`` (by ``--runtime``;
the old ``--backend ort|tflite`` is a hidden alias), the ORT flags from
the settings model, and ``--auto``/``--accuracy-budget``/the sensitivity ranking run in the library
workflow that the pipeline runs too.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.log import log


def register(subparsers: argparse._SubParsersAction) -> None:
    from edgekit.cli.common import add_output_file, add_runtime, add_ssh_options, add_targets_dir
    from edgekit.quantize.ort.settings import add_arguments
    from edgekit.quantize.registry import BACKENDS, MODES

    parser = subparsers.add_parser(
        "quantize", help="post-training INT8 quantization (ONNX Runtime static or TFLite full-integer)",
        description="Quantize an FP32 ONNX model to INT8, calibrated on your own images.",
    )
    parser.add_argument("model", help="FP32 .onnx file (from edgekit export)")
    add_runtime(parser, "required: the runtime the INT8 model is for; "
                + "; ".join(f"{b.runtime}: {b.label} ({b.suffix})" for b in BACKENDS.values()))
    parser.add_argument("--backend", dest="runtime", choices=tuple(b.runtime for b in BACKENDS.values()),
                        type=_backend_runtime,
                        help=argparse.SUPPRESS)  # before --runtime: ort|tflite, kept for old scripts
    parser.add_argument("--mode", choices=tuple(MODES), default="static",
                        help="static: INT8 calibrated on --calib (default); dynamic: INT8 weights, activations "
                             "quantized at run time; fp16: float16 weights. dynamic and fp16 need no --calib "
                             "(given, --calib or --eval images measure fidelity to FP32) and take none of the "
                             "static-only options (an error names the one given)")
    parser.add_argument("--calib", help="image folder, .npy/.npz, or builtin:digits/train (required by --mode static)")
    parser.add_argument("--recipe", help="preprocessing recipe: imagenet, digits, or a YAML path "
                                         "(required with --calib or --eval)")
    parser.add_argument("--num-samples", type=int, default=200, help="calibration samples (seeded, stratified)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    parser.add_argument("--task", help="what the model does: fidelity and --accuracy-budget measure it "
                                       "(default: the model's manifest's, else classification)")
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt images and count them")
    parser.add_argument("--no-remedies", action="store_true",
                        help="keep the INT8 model as configured even when its fidelity to FP32 is below the threshold "
                             "(remedies: ORT per-channel, Percentile/Entropy, 7-bit, layers in float; both runtimes "
                             "mean min/max ranges)")
    add_output_file(parser, ".onnx (onnxruntime) or .tflite (tflite) to write")
    parser.add_argument("--target", help="target profile whose quantization defaults to use (edgekit targets list)")
    add_targets_dir(parser)
    ort = parser.add_argument_group("ONNX Runtime")
    add_arguments(ort)
    ort.add_argument("--exclude", action="append", default=[], help="node name to keep in float (repeatable)")
    ort.add_argument("--accuracy-budget", type=float,
                     help="max points of the task's metric lost (top-1, mAP50-95, mIoU); needs --eval")
    ort.add_argument("--eval", help="labelled data to measure accuracy on (for --accuracy-budget and --auto)")
    ort.add_argument("--auto", action="store_true",
                     help="measure the candidate configurations on --host (or the --target profile's ssh: device, "
                          "else this machine), keep the fastest within the accuracy budget")
    ort.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer error ranking")
    tfl = parser.add_argument_group("TFLite")
    tfl.add_argument("--float-io", action="store_true", help="keep float input/output (int8 inside)")
    tfl.add_argument("--float-fallback", "--allow-float-ops", dest="float_fallback", action="store_true",
                     help="keep ops that have no integer kernel in float; the model is then labelled not full-integer")
    tfl.add_argument("--no-fp32", action="store_true", help="do not write the FP32 .tflite reference")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    add_ssh_options(parser, host_help="with --auto: the device to measure the candidates on (user@addr[:port], an "
                                      "~/.ssh/config alias or an inventory device name)")
    parser.set_defaults(handler=run)


def _backend_runtime(name: str) -> str:
    """``--backend ort`` -> ``onnxruntime``: the deprecated names as the runtime they quantize for."""
    from edgekit.quantize.registry import BACKENDS

    return BACKENDS[name].runtime if name in BACKENDS else name


def run(args: argparse.Namespace) -> int:
    from edgekit.atomic import check_can_write
    from edgekit.data import calibration_tensors, load_recipe
    from edgekit.errors import EdgekitError
    from edgekit.quantize.accuracy import accuracy_on
    from edgekit.quantize.ort.workflow import check_budget
    from edgekit.quantize.registry import backend_for
    from edgekit.runtime.verify import verify_onnx

    if args.runtime is None:
        raise EdgekitError("--runtime: required (onnxruntime or tflite: the runtime the INT8 model is for)")
    backend = backend_for(args.runtime)
    backend.check_output(args.output)
    if args.host and not (args.auto and backend.name == "ort"):
        raise EdgekitError("--host: only --auto --runtime onnxruntime measures on a device (see edgekit bench --host "
                           "to measure a quantized model there)")
    if args.mode != "static":
        return _run_without_calibration(args, backend)
    for flag in ("calib", "recipe"):
        if getattr(args, flag) is None:
            raise EdgekitError(f"--{flag}: required with --mode static (--mode dynamic or fp16 needs no calibration data)")
    inputs = [args.model, args.calib, args.eval]
    check_can_write(args.output, args.force, inputs=inputs)
    if backend.name == "tflite" and not args.no_fp32:
        from edgekit.quantize.tflite.quantizer import fp32_path_for

        check_can_write(fp32_path_for(args.output), args.force, inputs=inputs)
    if Path(args.model).suffix.lower() != ".onnx" and Path(args.model).is_file():
        raise EdgekitError(f"{args.model}: quantize takes an FP32 .onnx model (from edgekit export)")
    quantize = backend.load()
    model = verify_onnx(args.model, session=True)  # the one onnx.checker run; the backend reuses the model
    if args.num_samples < 1:
        raise EdgekitError(f"--num-samples: must be at least 1, got {args.num_samples}")
    if args.seed < 0:
        raise EdgekitError(f"--seed: must be non-negative, got {args.seed}")
    task = _task(args)
    evaluate = accuracy_on(args.eval, args.recipe, task) if args.eval else None
    check_budget(args.accuracy_budget, evaluate)
    if args.eval:
        from edgekit.data import open_dataset

        open_dataset(args.eval, args.recipe)  # fail now, not after calibrating
    recipe = load_recipe(args.recipe)
    options = _ort_options(args, evaluate) if backend.name == "ort" else {
        "float_io": args.float_io, "float_fallback": args.float_fallback, "write_fp32": not args.no_fp32,
        "remedies": not args.no_remedies, "quantize_ops": args.quantize_ops or "all"}
    options["task"] = task
    calib = calibration_tensors(args.calib, recipe, args.num_samples, args.seed, skip_bad=args.skip_bad)
    info = {"source": args.calib, "recipe": recipe.name, "num_samples": int(len(calib)), "seed": args.seed}
    if args.eval:  # fidelity on the evaluation images rather than a slice held out of the calibration ones
        from edgekit.quantize.fidelity import HOLDOUT

        options["holdout"] = calibration_tensors(args.eval, recipe, HOLDOUT, args.seed, skip_bad=args.skip_bad)
    result = quantize(args.model, args.output, calib, calibration_info=info, force=args.force, model=model, **options)
    _wrote(result)
    if backend.name == "tflite":
        log.info(f"conversion took {result.timings['total_s']:.1f} s; ops left in float: {', '.join(result.float_ops) or 'none'}")
        return 0
    if result.sensitivity:
        worst = ", ".join(f"{r['node'] or r['tensor']} ({r['sqnr_db']} dB)" for r in result.sensitivity[:3])
        log.info(f"most sensitive layers (SQNR, lower is worse): {worst}")
    log.info(f"{len(result.nodes_excluded)} node(s) kept in float")
    if "top1" in result.details:
        log.info(f"top-1 on {args.eval}: INT8 {result.details['top1']:.2f}%")
    return 0


def _task(args: argparse.Namespace) -> str:
    """--task, else what the model's manifest records, else classification; an unknown name is one line."""
    from edgekit.manifest import recorded_task
    from edgekit.tasks import DEFAULT_TASK, get_task

    return get_task(args.task or recorded_task(args.model) or DEFAULT_TASK).name


def _wrote(result) -> None:
    for kind, path in result.paths.items():
        log.info(f"wrote {path} ({result.mode if kind == 'int8' else kind}, {path.stat().st_size / 1e6:.2f} MB, "
                 f"{result.label if kind == 'int8' else 'FP32'})")


# options of --mode static only: (namespace attribute, its default); the ORT settings flags are checked too
_STATIC_ONLY = (("target", None), ("targets_dir", None), ("exclude", []), ("accuracy_budget", None), ("auto", False),
                ("no_sensitivity", False), ("no_remedies", False), ("float_io", False), ("float_fallback", False),
                ("no_fp32", False))


def _run_without_calibration(args: argparse.Namespace, backend) -> int:
    """``--mode dynamic|fp16``: no calibration; --calib/--eval images (optional) measure fidelity.
    An option the mode does not use is an error naming it, never silently dropped."""
    from edgekit.atomic import check_can_write
    from edgekit.data import calibration_tensors, load_recipe
    from edgekit.errors import EdgekitError
    from edgekit.quantize.fidelity import HOLDOUT
    from edgekit.quantize.ort.settings import from_arguments
    from edgekit.quantize.registry import get_mode
    from edgekit.runtime.verify import verify_onnx

    mode = get_mode(args.mode)
    accepted = mode.options.get(backend.name, ())
    given = [name for name, default in _STATIC_ONLY if getattr(args, name, default) != default]
    given += [name for name in from_arguments(args) if name not in accepted]
    if given:
        flag = "--" + given[0].replace("_", "-")
        takes = f" (it takes {', '.join('--' + o.replace('_', '-') for o in accepted)})" if accepted else ""
        raise EdgekitError(f"{flag}: not used by --mode {mode.name} --runtime {backend.runtime}{takes}")
    images = args.eval or args.calib
    if images and not args.recipe:
        raise EdgekitError(f"--recipe: required to read --{'eval' if args.eval else 'calib'} images")
    check_can_write(args.output, args.force, inputs=[args.model, args.calib, args.eval])
    if Path(args.model).suffix.lower() != ".onnx" and Path(args.model).is_file():
        raise EdgekitError(f"{args.model}: quantize takes an FP32 .onnx model (from edgekit export)")
    quantize = backend.load(mode.name)
    model = verify_onnx(args.model, session=True)
    if args.num_samples < 1:
        raise EdgekitError(f"--num-samples: must be at least 1, got {args.num_samples}")
    if args.seed < 0:
        raise EdgekitError(f"--seed: must be non-negative, got {args.seed}")
    samples, info = None, {}
    if images:
        recipe = load_recipe(args.recipe)
        samples = calibration_tensors(images, recipe, min(HOLDOUT, args.num_samples), args.seed, skip_bad=args.skip_bad)
        info = {"source": images, "recipe": recipe.name, "seed": args.seed}
    options = {name: getattr(args, name) for name in from_arguments(args)}
    result = quantize(args.model, args.output, samples, mode=mode.name, model=model, force=args.force,
                      source="eval data" if args.eval else "held-out", calibration_info=info, **options)
    _wrote(result)
    return 0


def _ort_options(args: argparse.Namespace, evaluate) -> dict:
    """The ORT workflow's options from the flags: settings resolved host <- --target <- flags."""
    from edgekit.cli.common import device_measurer
    from edgekit.quantize.ort.settings import from_arguments, resolve_settings

    profile = None
    if args.target:
        from edgekit.targets import load_target

        profile = load_target(args.target, args.targets_dir)
    settings = resolve_settings(profile, from_arguments(args), origin="command line")
    return {"settings": settings, "exclude": args.exclude, "auto": args.auto, "accuracy_budget": args.accuracy_budget,
            "evaluate": evaluate, "sensitivity": not args.no_sensitivity, "details": {"target": args.target},
            "remedies": not args.no_remedies, "measure": device_measurer(args, "onnxruntime") if args.auto else None}
